//! Whether the auth cache may be believed, in one place: trusted while the invalidation
//! listener listens; once it stops, since when — which bounds the opt-in stale grace. One
//! atomic, since the hot path reads it on every request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// `0`: trusted. `NEVER`: not trusted yet (nothing was ever cached, so no grace applies).
/// Otherwise: untrusted since `base` + (value - 1) ms.
const TRUSTED: u64 = 0;
const NEVER: u64 = u64::MAX;

pub struct Trust {
    base: Instant,
    state: AtomicU64,
    grace: Duration,
}

impl Trust {
    /// Starts untrusted: nothing is cached until the listener is listening.
    pub fn new(grace: Duration) -> Trust {
        Trust {
            base: Instant::now(),
            state: AtomicU64::new(NEVER),
            grace,
        }
    }

    pub fn is_trusted(&self) -> bool {
        self.state.load(Ordering::Acquire) == TRUSTED
    }

    /// Trust is lost; the first loss is the one the grace counts from.
    pub fn distrust(&self) {
        let since = self.base.elapsed().as_millis() as u64 + 1;
        let _ = self.state.compare_exchange(
            TRUSTED,
            since.min(NEVER - 1),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    pub fn trust(&self) {
        self.state.store(TRUSTED, Ordering::Release);
    }

    /// Zero: fail closed while untrusted.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Untrusted for less than the grace (never true when the grace is zero, or before the
    /// cache was first trusted).
    pub fn within_grace(&self) -> bool {
        match self.state.load(Ordering::Acquire) {
            TRUSTED | NEVER => false,
            since => {
                let down_for = self
                    .base
                    .elapsed()
                    .saturating_sub(Duration::from_millis(since - 1));
                down_for < self.grace
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_untrusted_without_grace_and_follows_the_listener() {
        let trust = Trust::new(Duration::from_secs(60));
        assert!(!trust.is_trusted());
        assert!(!trust.within_grace(), "nothing was ever trusted");
        trust.trust();
        assert!(trust.is_trusted());
        trust.distrust();
        assert!(!trust.is_trusted());
        assert!(trust.within_grace());
    }

    #[test]
    fn the_grace_counts_from_the_first_loss_and_runs_out() {
        let trust = Trust::new(Duration::from_millis(30));
        trust.trust();
        trust.distrust();
        std::thread::sleep(Duration::from_millis(20));
        trust.distrust(); // a second notice must not restart the clock
        std::thread::sleep(Duration::from_millis(20));
        assert!(!trust.within_grace());
        let none = Trust::new(Duration::ZERO);
        none.trust();
        none.distrust();
        assert!(!none.within_grace());
    }
}
