//! Per-session throttle of failed export lookups (SPEC.md §14).
//!
//! Export ids and keys are 64 random bits each, so guessing is hopeless; the throttle makes
//! it visible and expensive anyway, and keeps a guessing client from turning the exporter's
//! engine into a QUERY echo. A token bucket: every lookup (a READ/WRITE that has to ask the
//! peer for the export's descriptor) takes a token while in flight, and keeps it when answered
//! not-exported; any other answer gives it back. With none left, READ/WRITEs that would have
//! to ask the peer (no descriptor cached for this id and key) are refused at once with
//! `throttled`, without blocking anything.
//! Requests on descriptors already fetched go on: an honest client is never slowed by them.

use std::time::{Duration, Instant};

/// Failures a session may have in a burst before it is throttled.
pub const BURST: u32 = 32;
/// Failures per second a throttled session gets back.
pub const REFILL_PER_SEC: u32 = 8;
/// At most one log line per session this often while it keeps being refused.
const LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct LookupThrottle {
    /// Tokens, in 1/REFILL_PER_SEC-second units scaled by 1000 to refill without rounding loss.
    milli_tokens: u64,
    refilled_at: Instant,
    /// Lookups refused since the last log line, and when that was.
    refused_unlogged: u64,
    logged_at: Option<Instant>,
}

impl Default for LookupThrottle {
    fn default() -> Self {
        Self::new(Instant::now())
    }
}

/// What `refuse` found: go ahead, or refused (with a log line due when `log` is set).
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Refuse { log: Option<u64> },
}

impl LookupThrottle {
    pub fn new(now: Instant) -> Self {
        Self {
            milli_tokens: BURST as u64 * 1000,
            refilled_at: now,
            refused_unlogged: 0,
            logged_at: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled_at);
        let add = elapsed.as_millis() as u64 * REFILL_PER_SEC as u64;
        if add > 0 {
            self.milli_tokens = (self.milli_tokens + add).min(BURST as u64 * 1000);
            self.refilled_at = now;
        }
    }

    /// Before a lookup (a QUERY to the peer): may it go? An allowed lookup takes a token
    /// (so that lookups in flight count too), which `answered` gives back unless the answer
    /// was not-exported.
    pub fn check(&mut self, now: Instant) -> Verdict {
        self.refill(now);
        if self.milli_tokens >= 1000 {
            self.milli_tokens -= 1000;
            return Verdict::Allow;
        }
        self.refused_unlogged += 1;
        let due = self
            .logged_at
            .is_none_or(|t| now.saturating_duration_since(t) >= LOG_EVERY);
        if !due {
            return Verdict::Refuse { log: None };
        }
        self.logged_at = Some(now);
        Verdict::Refuse {
            log: Some(std::mem::take(&mut self.refused_unlogged)),
        }
    }

    /// An allowed lookup's request completed: a not-exported answer keeps its token spent,
    /// any other outcome (the export exists, or the peer could not be asked) returns it.
    pub fn answered(&mut self, now: Instant, not_exported: bool) {
        self.refill(now);
        if !not_exported {
            self.milli_tokens = (self.milli_tokens + 1000).min(BURST as u64 * 1000);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refused_then_refilled() {
        let t0 = Instant::now();
        let mut t = LookupThrottle::new(t0);
        // Lookups in flight count: a burst of them is allowed, the next is not.
        for _ in 0..BURST {
            assert_eq!(t.check(t0), Verdict::Allow);
        }
        assert_eq!(t.check(t0), Verdict::Refuse { log: Some(1) });
        // Answers that found the export give their tokens back; not-exported ones do not.
        t.answered(t0, false);
        t.answered(t0, true);
        assert_eq!(t.check(t0), Verdict::Allow);
        assert_eq!(t.check(t0), Verdict::Refuse { log: None });
        // One token back after 1/REFILL_PER_SEC s; the refusals since are reported later.
        let t1 = t0 + Duration::from_millis(1000 / REFILL_PER_SEC as u64);
        assert_eq!(t.check(t1), Verdict::Allow);
        assert_eq!(t.check(t1), Verdict::Refuse { log: None });
        let t2 = t1 + LOG_EVERY + Duration::from_secs(60);
        for _ in 0..BURST {
            assert_eq!(t.check(t2), Verdict::Allow);
        }
        assert_eq!(t.check(t2), Verdict::Refuse { log: Some(3) });
    }
}
