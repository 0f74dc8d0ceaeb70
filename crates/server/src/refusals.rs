//! Refused authentication, in bounded number: what anyone who reaches the port can cause.
//!
//! Every refusal stays in the audit log, but not one entry each. Within a window of one
//! minute (wall clock, per instance):
//!
//! - the first refusal of a source for a reason is recorded in full (`authenticate`, denied,
//!   with its request id), before the answer goes out;
//! - the others are counted in memory and written as one `authenticate.aggregated` entry per
//!   source and reason when the window closes (or at shutdown), through the ordinary append
//!   path, so the log stays gap-free and every count is under the tree's signatures;
//! - at most `refusal_sources_per_minute` sources are told apart; refusals from any further
//!   source are counted together, one aggregated entry per reason, and answered 429 at once.
//!
//! So one instance writes at most `2 × refusal_sources_per_minute + 2` entries a minute
//! however many requests are refused, and memory stays bounded the same way.
//!
//! Rate limit: a source answered more than `refusals_per_minute_per_source` refusals in the
//! window gets 429 with `Retry-After` (the end of the window) instead of 401. Only refusals
//! count, and a request is checked only after its token failed: an authenticated client is
//! never slowed, even one behind the same address as an attacker.
//!
//! Several instances on one database each keep their own window: the bounds above are per
//! instance.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

/// The source address of a request's connection (IPv6: its /64), set by the accept loop.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PeerSource(pub IpAddr);

/// How long one window lasts.
pub(crate) const WINDOW_SECS: i64 = 60;
/// How often closed windows are written.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// What to do with one refusal.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// Record this refusal in an entry of its own now (the first of its source and reason in
    /// the window).
    pub record: bool,
    /// Answer 429, retry after this many seconds.
    pub limited: Option<u64>,
}

#[derive(Default)]
struct Tally {
    /// Refusals after the first (which has its own entry), for the aggregated entry.
    further: u64,
    /// Of all refusals, how many were answered 429.
    limited: u64,
}

#[derive(Default)]
struct SourceTally {
    refusals: u64,
    by_reason: Vec<(&'static str, Tally)>,
}

/// One window's counts.
struct Window {
    start: i64,
    sources: HashMap<IpAddr, SourceTally>,
    /// Refusals from sources beyond the ones told apart, by reason: (refusals, sources).
    overflow: Vec<(&'static str, u64)>,
}

impl Window {
    fn new(start: i64) -> Window {
        Window {
            start,
            sources: HashMap::new(),
            overflow: Vec::new(),
        }
    }

    /// The aggregated entries of this window (none for refusals already recorded in full).
    fn entries(&self) -> Vec<audit::Entry> {
        let from = window_time(self.start);
        let mut entries = Vec::new();
        let mut sources: Vec<_> = self.sources.iter().collect();
        sources.sort_by_key(|(ip, _)| **ip);
        for (source, tally) in sources {
            for (reason, t) in &tally.by_reason {
                if t.further == 0 {
                    continue;
                }
                entries.push(aggregated(format!(
                    "{} more refusals from {source} in the minute from {from}: {reason} ({} answered 429)",
                    t.further, t.limited
                )));
            }
        }
        for (reason, count) in &self.overflow {
            entries.push(aggregated(format!(
                "{count} refusals from further sources (beyond the {} told apart) in the minute from {from}: {reason} (all answered 429)",
                self.sources.len()
            )));
        }
        entries
    }
}

fn aggregated(detail: String) -> audit::Entry {
    audit::Entry::new("anonymous", "authenticate.aggregated", "service")
        .with_outcome(audit::Outcome::Denied)
        .with_detail(detail)
}

fn window_time(start: i64) -> String {
    let at = std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(start).unwrap_or(0));
    humantime::format_rfc3339_seconds(at).to_string()
}

struct State {
    current: Window,
    /// Windows that ended and are not written yet, oldest first.
    closed: Vec<Window>,
}

/// The refusal counts of this instance.
pub(crate) struct Refusals {
    per_source: u64,
    max_sources: usize,
    state: Mutex<State>,
}

impl Refusals {
    pub(crate) fn new(per_source: u32, max_sources: usize) -> Refusals {
        Refusals {
            per_source: per_source.into(),
            max_sources,
            state: Mutex::new(State {
                current: Window::new(0),
                closed: Vec::new(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Every change under this lock is complete before it can panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one refusal of `source` for `reason` at `now` (Unix seconds).
    pub(crate) fn note(&self, source: IpAddr, reason: &'static str, now: i64) -> Verdict {
        let mut state = self.state();
        roll(&mut state, now);
        let retry_after = u64::try_from(state.current.start + WINDOW_SECS - now)
            .unwrap_or(1)
            .max(1);
        let window = &mut state.current;
        if !window.sources.contains_key(&source) && window.sources.len() >= self.max_sources {
            match window.overflow.iter_mut().find(|(r, _)| *r == reason) {
                Some((_, count)) => *count += 1,
                None => window.overflow.push((reason, 1)),
            }
            return Verdict {
                record: false,
                limited: Some(retry_after),
            };
        }
        let tally = window.sources.entry(source).or_default();
        tally.refusals += 1;
        let limited = (tally.refusals > self.per_source).then_some(retry_after);
        let (record, reason_tally) =
            match tally.by_reason.iter_mut().position(|(r, _)| *r == reason) {
                Some(i) => (false, &mut tally.by_reason[i].1),
                None => {
                    tally.by_reason.push((reason, Tally::default()));
                    let last = tally.by_reason.len() - 1;
                    (true, &mut tally.by_reason[last].1)
                }
            };
        if !record {
            reason_tally.further += 1;
        }
        if limited.is_some() {
            reason_tally.limited += 1;
        }
        Verdict { record, limited }
    }

    /// The aggregated entries of every window closed by `now` (all windows, the current one
    /// too, when `everything`), taken out of memory. Give them back with [`Refusals::restore`]
    /// if they could not be written.
    pub(crate) fn take(&self, now: i64, everything: bool) -> Vec<audit::Entry> {
        let mut state = self.state();
        roll(&mut state, now);
        if everything {
            let start = state.current.start;
            let current = std::mem::replace(&mut state.current, Window::new(start));
            state.closed.push(current);
        }
        let closed = std::mem::take(&mut state.closed);
        closed.iter().flat_map(Window::entries).collect()
    }
}

/// Closes the current window if `now` is past it.
fn roll(state: &mut State, now: i64) {
    let start = now - now.rem_euclid(WINDOW_SECS);
    if start != state.current.start {
        let ended = std::mem::replace(&mut state.current, Window::new(start));
        if !ended.sources.is_empty() || !ended.overflow.is_empty() {
            state.closed.push(ended);
        }
    }
}

/// Writes closed windows' entries every [`FLUSH_EVERY`]. Never returns (a supervised job).
pub(crate) async fn work(app: std::sync::Arc<crate::state::App>) {
    let mut pending: Vec<audit::Entry> = Vec::new();
    loop {
        tokio::time::sleep(FLUSH_EVERY).await;
        pending.extend(app.refusals.take(app.store.clock().now(), false));
        if let Err(e) = write(&app, &mut pending).await {
            tracing::warn!(error = %e, waiting = pending.len(), "could not record aggregated refusals; will retry");
        }
    }
}

/// At shutdown: writes every count still in memory.
pub(crate) async fn flush(app: &crate::state::App) -> anyhow::Result<()> {
    let mut pending = app.refusals.take(app.store.clock().now(), true);
    write(app, &mut pending).await
}

/// Appends `pending` in order; what was written leaves it.
async fn write(app: &crate::state::App, pending: &mut Vec<audit::Entry>) -> anyhow::Result<()> {
    while let Some(entry) = pending.first() {
        app.store.record(entry.clone()).await?;
        pending.remove(0);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BAD: &str = "invalid, expired or revoked token";
    const MISSING: &str = "missing or malformed bearer token";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn count(entries: &[audit::Entry]) -> u64 {
        entries
            .iter()
            .map(|e| {
                let detail = e.detail.as_deref().unwrap();
                detail.split(' ').next().unwrap().parse::<u64>().unwrap()
            })
            .sum()
    }

    #[test]
    fn the_first_refusal_is_recorded_and_the_rest_counted_per_source_and_reason() {
        let refusals = Refusals::new(100, 10);
        let t = 6_000;
        assert!(refusals.note(ip("192.0.2.1"), BAD, t).record);
        assert!(!refusals.note(ip("192.0.2.1"), BAD, t + 1).record);
        assert!(refusals.note(ip("192.0.2.1"), MISSING, t + 2).record);
        assert!(refusals.note(ip("192.0.2.2"), BAD, t + 3).record);
        for _ in 0..5 {
            refusals.note(ip("192.0.2.2"), BAD, t + 4);
        }
        // Nothing is written while the window is open.
        assert!(refusals.take(t + 59, false).is_empty());
        let entries = refusals.take(t + 60, false);
        assert_eq!(
            entries.len(),
            2,
            "one per source and reason with more than one"
        );
        assert_eq!(count(&entries), 6);
        assert!(
            entries
                .iter()
                .all(|e| e.action == "authenticate.aggregated"
                    && e.outcome == audit::Outcome::Denied)
        );
        // The next window starts afresh: its first refusal is recorded again.
        assert!(refusals.note(ip("192.0.2.1"), BAD, t + 61).record);
        assert!(refusals.take(t + 200, false).is_empty());
    }

    #[test]
    fn a_source_over_its_budget_is_told_when_to_retry() {
        let refusals = Refusals::new(3, 10);
        let t = 6_000;
        for _ in 0..3 {
            assert_eq!(refusals.note(ip("192.0.2.1"), BAD, t).limited, None);
        }
        assert_eq!(
            refusals.note(ip("192.0.2.1"), BAD, t + 15).limited,
            Some(45)
        );
        // Another source is not affected.
        assert_eq!(refusals.note(ip("192.0.2.9"), BAD, t + 15).limited, None);
        let entries = refusals.take(t, true);
        assert!(
            entries[0]
                .detail
                .as_deref()
                .unwrap()
                .contains("(1 answered 429)")
        );
    }

    #[test]
    fn sources_beyond_the_cap_are_counted_together_and_limited() {
        let refusals = Refusals::new(100, 2);
        let t = 6_000;
        assert!(refusals.note(ip("192.0.2.1"), BAD, t).record);
        assert!(refusals.note(ip("192.0.2.2"), BAD, t).record);
        let mut recorded = 2;
        for i in 3..=200u8 {
            let verdict = refusals.note(ip(&format!("192.0.2.{i}")), BAD, t);
            recorded += u64::from(verdict.record);
            assert!(verdict.limited.is_some());
        }
        assert_eq!(recorded, 2);
        let entries = refusals.take(t + 60, false);
        assert_eq!(entries.len(), 1);
        assert_eq!(count(&entries) + recorded, 200);
    }
}
