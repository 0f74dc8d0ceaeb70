//! A model's egress budget: set by the vendor's admins (a budget that lets more leave than
//! the current one, or none at all where one was, is a widening change and goes through
//! [`crate::approvals`]; a first budget or a tighter one applies at once), and shown with its
//! current use to those who may read the model's access. Enforcement is `crate::budgets`.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use policy::Action;
use store::{Budget, ByteLimit, PendingAction};
use wire::ErrorCode;
use wire::access::Outcome;
use wire::budget::{BudgetView, InFlight, SetBudget, Use};

use super::access::filed_response;
use super::json_body;
use super::models::{Found, authorize_model, load_model, vendor_of};
use crate::approvals::{self, Change};
use crate::auth::{Caller, policy_ids};
use crate::error::ApiError;
use crate::state::App;

pub(crate) fn to_wire(b: &Budget) -> wire::budget::Budget {
    let limit = |l: Option<ByteLimit>| {
        l.map(|l| match l {
            ByteLimit::Bytes(b) => wire::budget::ByteLimit::Bytes(b),
            ByteLimit::ModelSizeMilli(m) => wire::budget::ByteLimit::ModelSizeMilli(m),
        })
    };
    wire::budget::Budget {
        window_secs: b.window_secs,
        per_host: limit(b.per_host),
        per_user: limit(b.per_user),
        max_hosts: b.max_hosts,
        per_host_concurrency: b.per_host_concurrency,
    }
}

fn from_wire(b: &wire::budget::Budget) -> Result<Budget, ApiError> {
    if b.window_secs == 0 || b.window_secs > store::MAX_WINDOW_SECS {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidWindow,
            format!(
                "the budget's window must be between 1 second and {} days",
                store::MAX_WINDOW_SECS / 86_400
            ),
        ));
    }
    // Every number is stored as the databases' signed integer.
    let numbers = [
        b.per_host.map(limit_number),
        b.per_user.map(limit_number),
        b.max_hosts,
        b.per_host_concurrency,
    ];
    if numbers
        .into_iter()
        .flatten()
        .any(|n| i64::try_from(n).is_err())
    {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            "a budget's limits must be at most 9223372036854775807",
        ));
    }
    let limit = |l: Option<wire::budget::ByteLimit>| {
        l.map(|l| match l {
            wire::budget::ByteLimit::Bytes(b) => ByteLimit::Bytes(b),
            wire::budget::ByteLimit::ModelSizeMilli(m) => ByteLimit::ModelSizeMilli(m),
        })
    };
    Ok(Budget {
        window_secs: b.window_secs,
        per_host: limit(b.per_host),
        per_user: limit(b.per_user),
        max_hosts: b.max_hosts,
        per_host_concurrency: b.per_host_concurrency,
    })
}

fn limit_number(l: wire::budget::ByteLimit) -> u64 {
    match l {
        wire::budget::ByteLimit::Bytes(n) | wire::budget::ByteLimit::ModelSizeMilli(n) => n,
    }
}

/// Whether `new` lets more of a model of `model_size` bytes leave than `old` at some point:
/// a limit removed or raised, a shorter window for the byte limits (the same bytes more
/// often), or an absolute byte limit turned into a multiple (which grows with every larger
/// revision). Setting a budget where there was none only narrows.
pub(crate) fn budget_widens(old: Option<&Budget>, new: Option<&Budget>, model_size: u64) -> bool {
    let Some(old) = old.filter(|b| b.limits_anything()) else {
        return false;
    };
    let Some(new) = new.filter(|b| b.limits_anything()) else {
        return true;
    };
    let bytes_widen = |o: Option<ByteLimit>, n: Option<ByteLimit>| match (o, n) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(ByteLimit::ModelSizeMilli(o)), Some(ByteLimit::ModelSizeMilli(n))) => n > o,
        (Some(ByteLimit::Bytes(_)), Some(ByteLimit::ModelSizeMilli(_))) => true,
        (Some(o), Some(n)) => n.bytes(model_size) > o.bytes(model_size),
    };
    let count_widens = |o: Option<u64>, n: Option<u64>| match (o, n) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(o), Some(n)) => n > o,
    };
    let limits_bytes = old.per_host.is_some() || old.per_user.is_some();
    bytes_widen(old.per_host, new.per_host)
        || bytes_widen(old.per_user, new.per_user)
        || (limits_bytes && new.window_secs < old.window_secs)
        || count_widens(old.max_hosts, new.max_hosts)
        || count_widens(old.per_host_concurrency, new.per_host_concurrency)
}

/// `budget` in words, for audit entries.
fn describe(budget: Option<&Budget>) -> String {
    let Some(b) = budget.filter(|b| b.limits_anything()) else {
        return "none (unlimited)".to_owned();
    };
    let limit = |l: Option<ByteLimit>| match l {
        None => "none".to_owned(),
        Some(ByteLimit::Bytes(b)) => format!("{b} bytes"),
        Some(ByteLimit::ModelSizeMilli(m)) => format!("{}.{:03}x model size", m / 1000, m % 1000),
    };
    let count = |c: Option<u64>| c.map_or_else(|| "none".to_owned(), |c| c.to_string());
    format!(
        "window {}s, per host {}, per user {}, max hosts {}, per-host concurrency {}",
        b.window_secs,
        limit(b.per_host),
        limit(b.per_user),
        count(b.max_hosts),
        count(b.per_host_concurrency)
    )
}

async fn view(app: &App, found: Found) -> Result<BudgetView, ApiError> {
    let record = app.store.budget(&found.record.id).await?;
    let budget = record.as_ref().map(|r| r.budget);
    // Without a budget nothing is counted; the window only matters for the sums.
    let counted = budget.unwrap_or(Budget {
        window_secs: 1,
        per_host: None,
        per_user: None,
        max_hosts: None,
        per_host_concurrency: None,
    });
    let used = app.store.budget_use(&found.record.id, &counted).await?;
    let limit_of = |l: Option<ByteLimit>| l.map(|l| l.bytes(used.model_size));
    let uses = |list: Vec<(String, u64)>, limit: Option<u64>| {
        list.into_iter()
            .map(|(name, bytes)| Use { name, bytes, limit })
            .collect()
    };
    Ok(BudgetView {
        model: found.name,
        budget: budget.as_ref().map(to_wire),
        set_by: record.as_ref().map(|r| r.set_by.clone()),
        set_at: record.as_ref().map(|r| r.set_at),
        model_size: used.model_size,
        hosts: uses(used.hosts, limit_of(counted.per_host)),
        users: uses(used.users, limit_of(counted.per_user)),
        holding_hosts: used.holding_hosts,
        in_flight: used
            .in_flight
            .into_iter()
            .map(|(host, fetches)| InFlight { host, fetches })
            .collect(),
    })
}

/// `GET /v1/models/{vendor}/{model}/budget`: the budget and its use, for those who see the
/// model's access (its vendor's admins and auditors, the operator).
#[utoipa::path(
    get,
    path = "/v1/models/{vendor}/{model}/budget",
    operation_id = "budget_show",
    tag = "budget",
    params(("vendor" = String, Path, description = "vendor (see the route)"), ("model" = String, Path, description = "model (see the route)")),
    responses(
        (status = 200, description = "done", body = BudgetView),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn show(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((vendor, model)): Path<(String, String)>,
) -> Result<Json<BudgetView>, ApiError> {
    let found = load_model(&app, &vendor, &model).await?;
    authorize_model(&app, &caller, Action::ReadAccess, &found).await?;
    Ok(Json(view(&app, found).await?))
}

/// `PUT /v1/models/{vendor}/{model}/budget`: replaces the budget (`null` removes it).
#[utoipa::path(
    put,
    path = "/v1/models/{vendor}/{model}/budget",
    operation_id = "budget_set",
    tag = "budget",
    params(("vendor" = String, Path, description = "vendor (see the route)"), ("model" = String, Path, description = "model (see the route)")),
    request_body = SetBudget,
    responses(
        (status = 200, description = "done", body = Outcome<BudgetView>),
        (status = 202, description = "waits for approval", body = Outcome<BudgetView>),
        (status = "4XX", description = "refused: the body says why, in plain words", body = wire::ErrorBody),
        (status = "5XX", description = "the server failed; the log has the details", body = wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn set(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((vendor, model)): Path<(String, String)>,
    body: Result<Json<SetBudget>, JsonRejection>,
) -> Result<(StatusCode, Json<Outcome<BudgetView>>), ApiError> {
    let found = load_model(&app, &vendor, &model).await?;
    let decision = authorize_model(&app, &caller, Action::Configure, &found).await?;
    let request = json_body(body)?;
    let new = request.budget.as_ref().map(from_wire).transpose()?;
    let new = new.filter(Budget::limits_anything);
    let old = app.store.budget(&found.record.id).await?.map(|r| r.budget);
    let size = app
        .store
        .budget_use(
            &found.record.id,
            &Budget {
                window_secs: 1,
                per_host: None,
                per_user: None,
                max_hosts: None,
                per_host_concurrency: None,
            },
        )
        .await?
        .model_size;
    let detail = format!(
        "from {} to {}",
        describe(old.as_ref()),
        describe(new.as_ref())
    );
    if budget_widens(old.as_ref(), new.as_ref(), size) {
        let vendor = vendor_of(&found);
        let needed = approvals::approvals_needed(&app, &caller, &vendor, Change::Widens).await?;
        if needed > 0 {
            let entry = caller
                .entry("budget.set.request", found.name.as_str())
                .with_decision(true, &policy_ids(&decision))
                .with_detail(detail);
            let action = PendingAction::Budget {
                model_id: found.record.id.clone(),
                budget: new,
            };
            let filed =
                approvals::file(&app, &caller, &vendor, &action, None, needed, entry).await?;
            return Ok(filed_response(&filed));
        }
    }
    let entry = caller
        .entry("budget.set", found.name.as_str())
        .with_decision(true, &policy_ids(&decision))
        .with_detail(detail);
    app.store
        .set_budget(&found.record.id, new.as_ref(), &caller.actor(), entry)
        .await?;
    Ok((
        StatusCode::OK,
        Json(Outcome::Done(view(&app, found).await?)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(window: u64, per_host: Option<ByteLimit>, max_hosts: Option<u64>) -> Budget {
        Budget {
            window_secs: window,
            per_host,
            per_user: None,
            max_hosts,
            per_host_concurrency: None,
        }
    }

    #[test]
    fn raising_or_removing_a_limit_widens_and_tightening_does_not() {
        let two_x = Some(ByteLimit::ModelSizeMilli(2000));
        let day = 86_400;
        let base = budget(day, two_x, Some(3));
        let size = 1000;
        // (old, new, widens)
        let cases = [
            (None, Some(base), false),
            (Some(base), None, true),
            (Some(base), Some(base), false),
            (
                Some(base),
                Some(budget(day, Some(ByteLimit::ModelSizeMilli(1000)), Some(3))),
                false,
            ),
            (
                Some(base),
                Some(budget(day, Some(ByteLimit::ModelSizeMilli(3000)), Some(3))),
                true,
            ),
            (Some(base), Some(budget(day, None, Some(3))), true),
            (Some(base), Some(budget(day, two_x, Some(4))), true),
            (Some(base), Some(budget(day, two_x, None)), true),
            (Some(base), Some(budget(day, two_x, Some(2))), false),
            // The same bytes over a shorter window is more per time; longer is less.
            (Some(base), Some(budget(3600, two_x, Some(3))), true),
            (Some(base), Some(budget(2 * day, two_x, Some(3))), false),
            // Absolute and multiple compare at the model's size now; a multiple grows later.
            (
                Some(base),
                Some(budget(day, Some(ByteLimit::Bytes(2000)), Some(3))),
                false,
            ),
            (
                Some(base),
                Some(budget(day, Some(ByteLimit::Bytes(2001)), Some(3))),
                true,
            ),
            (
                Some(budget(day, Some(ByteLimit::Bytes(5000)), None)),
                Some(budget(day, Some(ByteLimit::ModelSizeMilli(1000)), None)),
                true,
            ),
            // A budget of nothing but a window limits nothing.
            (Some(budget(day, None, None)), None, false),
        ];
        for (old, new, widens) in cases {
            assert_eq!(
                budget_widens(old.as_ref(), new.as_ref(), size),
                widens,
                "{old:?} -> {new:?}"
            );
        }
    }
}
