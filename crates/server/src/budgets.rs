//! Egress budgets at fetch time: admitting a fetch within the model's budget (the check and
//! the reservation are the store's, in the fetch's own audit transaction), the lease that
//! holds a concurrency slot while the bytes flow, refusals in plain words, and the refusals'
//! audit entries in bounded number.
//!
//! Refusals are recorded like refused authentication (`refusals.rs`): within a minute
//! (per instance), the first refusal of a caller on a host for a model and limit is recorded
//! in full, before the answer goes out; the rest are counted and written as one
//! `fetch.refused.aggregated` entry when the minute closes (or at shutdown). At most
//! [`KEYS_PER_MINUTE`] callers are told apart; any further are counted together. A client
//! looping on a refused fetch therefore adds at most one entry a minute.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use store::{Admitted, EgressRequest, Exceeded, HostCopy, Store};

use crate::approvals::rfc3339;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::App;

/// How long a fetch's lease lasts unless renewed, and how often a running transfer renews it.
const LEASE_SECS: i64 = 30;
const RENEW_EVERY: Duration = Duration::from_secs(10);

/// Refusal windows, in seconds, and how many (caller, host, model, limit) keys one window
/// tells apart.
const WINDOW_SECS: i64 = 60;
const KEYS_PER_MINUTE: usize = 1000;

/// Admits a fetch of `copy` to an enrolled host within the model's budget: records the
/// fetch's `entry` and the copy, reserves the bytes and takes a lease (if the model limits
/// concurrent fetches), or refuses with 429 and records the refusal. The returned guard must
/// live as long as the transfer.
pub(crate) async fn admit(
    app: &App,
    caller: &Caller,
    model: &str,
    copy: &HostCopy,
    entry: audit::Entry,
) -> Result<Option<LeaseGuard>, ApiError> {
    let lease_id = crypto::token::random_id()?;
    let request = EgressRequest {
        user_id: &caller.credential.user_id,
        lease_id: &lease_id,
        lease_secs: LEASE_SECS,
    };
    let resource = entry.resource.clone();
    let path = copy.path.to_string();
    match app
        .store
        .record_fetch_within_budget(entry, copy, &request)
        .await?
    {
        Ok(Admitted { lease, .. }) => Ok(lease.map(|id| LeaseGuard::new(app.store.clone(), id))),
        Err(exceeded) => {
            let host = caller
                .host
                .as_ref()
                .map(crate::auth::CallerHost::name)
                .unwrap_or_default();
            let now = app.store.clock().now();
            let message = refusal_message(&exceeded, model, &host, now);
            let key = RefusalKey {
                actor: caller.actor(),
                host: host.clone(),
                model: model.to_owned(),
                limit: limit_name(&exceeded),
            };
            if app.budget_refusals.note(key, now) {
                let entry = caller
                    .entry("fetch", resource)
                    .with_decision(false, "egress-budget")
                    .with_outcome(audit::Outcome::Denied)
                    .with_detail(format!("{path}: {message}"));
                app.store.record(entry).await?;
            }
            Err(ApiError::BudgetExceeded {
                message,
                retry_after: retry_after(&exceeded, now),
                busy: matches!(exceeded, Exceeded::Concurrency { .. }),
            })
        }
    }
}

/// Seconds until the budget frees up, when that is known.
fn retry_after(exceeded: &Exceeded, now: i64) -> Option<u64> {
    let at = match exceeded {
        Exceeded::PerHost { retry_at, .. } | Exceeded::PerUser { retry_at, .. } => (*retry_at)?,
        // A running fetch ends sooner than its lease, as a rule: ask again in a moment.
        Exceeded::Concurrency { retry_at, .. } => (*retry_at).min(now + 2),
        Exceeded::MaxHosts { .. } => return None,
    };
    Some(u64::try_from(at.saturating_sub(now)).unwrap_or(0).max(1))
}

fn limit_name(exceeded: &Exceeded) -> &'static str {
    match exceeded {
        Exceeded::PerHost { .. } => "per-host bytes",
        Exceeded::PerUser { .. } => "per-user bytes",
        Exceeded::MaxHosts { .. } => "max hosts",
        Exceeded::Concurrency { .. } => "per-host concurrency",
    }
}

/// `n` bytes as a person reads them: exact, with binary units beside large numbers.
pub(crate) fn bytes_in_words(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut value = u128::from(n) * 10;
    let mut unit = 0;
    value /= 1024;
    while value >= 10 * 1024 && unit + 1 < UNITS.len() {
        value /= 1024;
        unit += 1;
    }
    format!("{n} bytes ({}.{} {})", value / 10, value % 10, UNITS[unit])
}

fn window_in_words(secs: u64) -> String {
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

fn frees_up(retry_at: i64, now: i64) -> String {
    let wait = u64::try_from(retry_at.saturating_sub(now))
        .unwrap_or(0)
        .max(1);
    format!(
        "it frees up at {} (in {})",
        rfc3339(retry_at),
        window_in_words(wait)
    )
}

/// What a refused caller reads: which limit, how much is used, and when it frees up or
/// whom to ask.
pub(crate) fn refusal_message(exceeded: &Exceeded, model: &str, host: &str, now: i64) -> String {
    let vendor = model.split('/').next().unwrap_or(model);
    let raise = format!(
        "a vendor admin of {vendor} may raise it (`custody budget {model}`; raising waits for \
         approval under the two-person rule)"
    );
    let bytes_refusal =
        |whose: String, limit: u64, used: u64, asked: u64, window: u64, retry_at: Option<i64>| {
            let head = format!(
                "egress budget exceeded: {whose} received {} of {model} in the last {}, and this \
             request asks for {} more; the budget is {} per {}",
                bytes_in_words(used),
                window_in_words(window),
                bytes_in_words(asked),
                bytes_in_words(limit),
                window_in_words(window),
            );
            match retry_at {
                Some(at) => format!("{head}: {}, or {raise}", frees_up(at, now)),
                None => format!(
                    "{head}: this request alone is larger than the whole budget, so it never fits; \
                 fetch in smaller ranges (`custody fetch` does), or {raise}"
                ),
            }
        };
    match exceeded {
        Exceeded::PerHost {
            limit,
            used,
            asked,
            window_secs,
            retry_at,
        } => bytes_refusal(
            format!("host {host} has"),
            *limit,
            *used,
            *asked,
            *window_secs,
            *retry_at,
        ),
        Exceeded::PerUser {
            limit,
            used,
            asked,
            window_secs,
            retry_at,
        } => bytes_refusal(
            "you have (over all hosts)".to_owned(),
            *limit,
            *used,
            *asked,
            *window_secs,
            *retry_at,
        ),
        Exceeded::MaxHosts { limit } => format!(
            "egress budget exceeded: {model} may be held by at most {limit} hosts, and {limit} \
             others already hold it, so host {host} may not receive it; {raise}, or withdraw \
             the approval of a host that no longer needs it (`custody host unapprove`)"
        ),
        Exceeded::Concurrency { limit, .. } => format!(
            "egress budget exceeded: host {host} already runs as many fetches of {model} at \
             once as its budget allows ({limit}); retry when one of them ends"
        ),
    }
}

/// A fetch's concurrency slot: renewed while it lives, released when dropped (the transfer
/// ended, completed or cut). A crashed server's leases expire after [`LEASE_SECS`].
pub(crate) struct LeaseGuard {
    store: Store,
    id: String,
    renewer: tokio::task::JoinHandle<()>,
}

impl LeaseGuard {
    fn new(store: Store, id: String) -> LeaseGuard {
        let renewer = {
            let (store, id) = (store.clone(), id.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(RENEW_EVERY).await;
                    if let Err(e) = store.renew_fetch_lease(&id, LEASE_SECS).await {
                        tracing::warn!(error = %e, "could not renew a fetch lease");
                    }
                }
            })
        };
        LeaseGuard { store, id, renewer }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.renewer.abort();
        let (store, id) = (self.store.clone(), std::mem::take(&mut self.id));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = store.release_fetch_lease(&id).await {
                    // It expires on its own.
                    tracing::warn!(error = %e, "could not release a fetch lease");
                }
            });
        }
    }
}

// ----- refusals in bounded number -------------------------------------------------------------

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct RefusalKey {
    actor: String,
    host: String,
    model: String,
    limit: &'static str,
}

struct Window {
    start: i64,
    /// Refusals after the first of each key (which has its own entry).
    further: HashMap<RefusalKey, u64>,
    /// Refusals of keys beyond the ones told apart.
    overflow: u64,
}

impl Window {
    fn new(start: i64) -> Window {
        Window {
            start,
            further: HashMap::new(),
            overflow: 0,
        }
    }

    fn entries(&self) -> Vec<audit::Entry> {
        let from = rfc3339(self.start);
        let mut keys: Vec<_> = self.further.iter().filter(|(_, n)| **n > 0).collect();
        keys.sort();
        let mut entries: Vec<audit::Entry> = keys
            .into_iter()
            .map(|(key, n)| {
                let mut entry = audit::Entry::new(
                    key.actor.clone(),
                    "fetch.refused.aggregated",
                    &key.model,
                )
                .with_outcome(audit::Outcome::Denied)
                .with_decision(false, "egress-budget")
                .with_detail(format!(
                    "{n} more refusals in the minute from {from}: {} limit of the egress budget",
                    key.limit
                ));
                entry.host = Some(key.host.clone());
                entry
            })
            .collect();
        if self.overflow > 0 {
            entries.push(
                audit::Entry::new("system", "fetch.refused.aggregated", "service")
                    .with_outcome(audit::Outcome::Denied)
                    .with_decision(false, "egress-budget")
                    .with_detail(format!(
                        "{} refusals of further callers (beyond the {KEYS_PER_MINUTE} told apart) in the minute from {from}",
                        self.overflow
                    )),
            );
        }
        entries
    }
}

struct Windows {
    current: Window,
    closed: Vec<Window>,
}

/// This instance's budget refusals, counted per minute.
pub(crate) struct BudgetRefusals {
    windows: Arc<Mutex<Windows>>,
}

impl Default for BudgetRefusals {
    fn default() -> Self {
        BudgetRefusals {
            windows: Arc::new(Mutex::new(Windows {
                current: Window::new(0),
                closed: Vec::new(),
            })),
        }
    }
}

/// The background job (every instance, no lease, supervised by `background.rs`): writes the
/// entries of the minutes that closed, every second. Never returns.
pub(crate) async fn work(app: Arc<App>) {
    let mut pending: Vec<audit::Entry> = Vec::new();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        pending.extend(take(
            &app.budget_refusals.windows,
            app.store.clock().now(),
            false,
        ));
        if let Err(e) = write(&app.store, &mut pending).await {
            tracing::warn!(error = %e, waiting = pending.len(), "could not record aggregated budget refusals; will retry");
        }
    }
}

fn lock(windows: &Mutex<Windows>) -> std::sync::MutexGuard<'_, Windows> {
    // Every change under this lock is complete before it can panic.
    windows.lock().unwrap_or_else(|e| e.into_inner())
}

fn roll(windows: &mut Windows, now: i64) {
    let start = now - now.rem_euclid(WINDOW_SECS);
    if start != windows.current.start {
        let ended = std::mem::replace(&mut windows.current, Window::new(start));
        if !ended.further.is_empty() || ended.overflow > 0 {
            windows.closed.push(ended);
        }
    }
}

/// The entries of the windows closed by `now` (all, when `everything`), taken out.
fn take(windows: &Mutex<Windows>, now: i64, everything: bool) -> Vec<audit::Entry> {
    let mut w = lock(windows);
    roll(&mut w, now);
    if everything {
        let start = w.current.start;
        let current = std::mem::replace(&mut w.current, Window::new(start));
        w.closed.push(current);
    }
    std::mem::take(&mut w.closed)
        .iter()
        .flat_map(Window::entries)
        .collect()
}

impl BudgetRefusals {
    /// Counts one refusal; true when it is the first of its key in the window and must be
    /// recorded in full.
    pub(crate) fn note(&self, key: RefusalKey, now: i64) -> bool {
        let mut w = lock(&self.windows);
        roll(&mut w, now);
        let window = &mut w.current;
        if let Some(n) = window.further.get_mut(&key) {
            *n += 1;
            return false;
        }
        if window.further.len() >= KEYS_PER_MINUTE {
            window.overflow += 1;
            return false;
        }
        window.further.insert(key, 0);
        true
    }

    /// At shutdown: writes every count still in memory.
    pub(crate) async fn flush(&self, store: &Store) -> anyhow::Result<()> {
        let mut pending = take(&self.windows, store.clock().now(), true);
        write(store, &mut pending).await
    }
}

async fn write(store: &Store, pending: &mut Vec<audit::Entry>) -> anyhow::Result<()> {
    while let Some(entry) = pending.first() {
        store.record(entry.clone()).await?;
        pending.remove(0);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(actor: &str) -> RefusalKey {
        RefusalKey {
            actor: actor.into(),
            host: "gpu-01".into(),
            model: "acme/m".into(),
            limit: "per-host bytes",
        }
    }

    fn counted(w: &Mutex<Windows>, now: i64) -> Vec<audit::Entry> {
        take(w, now, false)
    }

    #[test]
    fn a_refused_loop_adds_one_entry_a_minute() {
        let refusals = BudgetRefusals::default();
        let t = 6_000;
        assert!(refusals.note(key("committer:alice"), t));
        for i in 0..500 {
            assert!(!refusals.note(key("committer:alice"), t + i % 59));
        }
        assert!(refusals.note(key("committer:bob"), t + 1));
        assert!(counted(&refusals.windows, t + 59).is_empty());
        let entries = counted(&refusals.windows, t + 60);
        assert_eq!(entries.len(), 1, "bob's single refusal has its own entry");
        let detail = entries[0].detail.as_deref().unwrap();
        assert!(detail.starts_with("500 more refusals"), "{detail}");
        assert_eq!(entries[0].resource, "acme/m");
        assert_eq!(entries[0].host.as_deref(), Some("gpu-01"));
        // A new minute records its first refusal in full again.
        assert!(refusals.note(key("committer:alice"), t + 61));
    }

    #[test]
    fn callers_beyond_the_cap_are_counted_together() {
        let refusals = BudgetRefusals::default();
        let t = 6_000;
        let mut recorded = 0;
        for i in 0..(KEYS_PER_MINUTE + 200) {
            recorded += usize::from(refusals.note(key(&format!("committer:u{i}")), t));
        }
        assert_eq!(recorded, KEYS_PER_MINUTE);
        let entries = take(&refusals.windows, t, true);
        assert_eq!(entries.len(), 1);
        assert!(
            entries[0]
                .detail
                .as_deref()
                .unwrap()
                .starts_with("200 refusals")
        );
    }

    #[test]
    fn refusals_say_what_was_used_and_when_it_frees_up() {
        let now = 1_700_000_000;
        let said = refusal_message(
            &Exceeded::PerHost {
                limit: 2 << 30,
                used: 2 << 30,
                asked: 16 << 20,
                window_secs: 86_400,
                retry_at: Some(now + 3600),
            },
            "acme/m",
            "gpu-01",
            now,
        );
        assert!(
            said.contains(
                "host gpu-01 has received 2147483648 bytes (2.0 GiB) of acme/m in the last 1day"
            ),
            "{said}"
        );
        assert!(
            said.contains("it frees up at 2023-11-14T23:13:20Z (in 1h)"),
            "{said}"
        );
        let said = refusal_message(
            &Exceeded::PerUser {
                limit: 10,
                used: 0,
                asked: 11,
                window_secs: 60,
                retry_at: None,
            },
            "acme/m",
            "gpu-01",
            now,
        );
        assert!(said.contains("larger than the whole budget"), "{said}");
        assert_eq!(
            retry_after(&Exceeded::MaxHosts { limit: 3 }, now),
            None,
            "no time is known for a place among the hosts"
        );
        assert_eq!(bytes_in_words(1536), "1536 bytes (1.5 KiB)");
        assert_eq!(bytes_in_words(1023), "1023 bytes");
    }
}
