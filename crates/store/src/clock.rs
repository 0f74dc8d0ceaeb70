//! The one clock custody reads the time from.
//!
//! Every decision that depends on the time (a token's or grant's expiry, an embargo, a
//! pending request's expiry, `delete_after`, an upload session's expiry, a deletion's retry)
//! reads it here, through the [`Store`](crate::Store) that owns the clock, so a test moves
//! time for the whole service at once instead of sleeping. Audit entries keep the wall-clock
//! time at which they were written: the log records when things happened.
//!
//! The clock is the system clock plus an offset that only moves forward ([`Clock::advance`]).
//! Builds with the `test-hooks` feature (test builds only; never the release binary) add the
//! offset written in the file named by `CUSTODY_TEST_CLOCK_FILE`, so an end-to-end test moves a
//! running server's time.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Shared: clones read and move the same time.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    offset_secs: Arc<AtomicI64>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// Unix seconds.
    pub fn now(&self) -> i64 {
        Clock::system_now()
            .saturating_add(self.offset_secs.load(Ordering::Relaxed))
            .saturating_add(hook::offset_secs())
    }

    /// The system's time, never moved: only for what others check against their own system
    /// clock, such as the validity of a certificate (TLS stacks check it against theirs).
    pub fn system_now() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }

    /// Moves this clock (and every clone of it) `secs` forward. Time never runs backwards: a
    /// negative `secs` is ignored.
    pub fn advance(&self, secs: i64) {
        self.offset_secs.fetch_add(secs.max(0), Ordering::Relaxed);
    }
}

#[cfg(feature = "test-hooks")]
mod hook {
    /// The offset in the file named by `CUSTODY_TEST_CLOCK_FILE` (decimal seconds), read at
    /// every call so a test's change takes effect at once; 0 without the file.
    pub(super) fn offset_secs() -> i64 {
        std::env::var_os("CUSTODY_TEST_CLOCK_FILE")
            .and_then(|path| std::fs::read_to_string(path).ok())
            .and_then(|text| text.trim().parse::<i64>().ok())
            .unwrap_or(0)
            .max(0)
    }
}

#[cfg(not(feature = "test-hooks"))]
mod hook {
    pub(super) fn offset_secs() -> i64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::Clock;

    #[test]
    fn advancing_moves_every_clone_and_never_goes_back() {
        let clock = Clock::system();
        let other = clock.clone();
        let before = other.now();
        clock.advance(3600);
        let after = other.now();
        assert!(
            (3600..3700).contains(&(after - before)),
            "{before} -> {after}"
        );
        clock.advance(-7200);
        assert!(other.now() >= after, "a negative step is ignored");
    }
}
