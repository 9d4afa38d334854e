//! Counters per worker and per session. Each counter has a single writer (the worker thread
//! that owns it), so it is bumped with a plain load+store rather than a locked
//! read-modify-write; readers (logs, status, metrics) load it Relaxed and may see it slightly
//! stale, never torn.

use std::sync::atomic::{AtomicU64, Ordering};

use ring_proto::ResultCode;

/// A single-writer counter.
#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Only the owning worker thread may call this.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0
            .store(self.0.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Error completions by result code: one single-writer counter per [`ResultCode`], and one
/// for negative results this engine does not name.
#[derive(Default, Debug)]
pub struct ErrorKinds([Counter; ResultCode::ALL.len() + 1]);

impl ErrorKinds {
    /// Counts one completion with a negative `result`. Owning worker thread only.
    #[inline]
    pub fn record(&self, result: i32) {
        let i = ResultCode::ALL
            .iter()
            .position(|&c| c as i32 == result)
            .unwrap_or(ResultCode::ALL.len());
        self.0[i].add(1);
    }

    /// (kind name, count) for every kind, named ones first, then "other".
    pub fn counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        ResultCode::ALL
            .iter()
            .map(|c| c.name())
            .chain(std::iter::once("other"))
            .zip(self.0.iter().map(Counter::get))
    }
}

#[derive(Default, Debug)]
pub struct SessionStats {
    /// Entries taken from the SQ.
    pub submitted: Counter,
    /// Completions posted (successful or not).
    pub completed: Counter,
    /// Completions with a negative result.
    pub errors: Counter,
    /// Times the engine found entries it could not take because the CQ was full.
    pub cq_full: Counter,
    /// `errors`, by result code.
    pub error_kinds: ErrorKinds,
}

#[derive(Default, Debug)]
pub struct WorkerStats {
    pub submitted: Counter,
    pub completed: Counter,
    pub errors: Counter,
    pub cq_full: Counter,
    pub sleeps: Counter,
    pub wakeups: Counter,
    /// Idle spins cut short because another thread had the worker's core (it is shared; idle.rs).
    pub spins_preempted: Counter,
    pub sessions_added: Counter,
    pub sessions_removed: Counter,
    pub error_kinds: ErrorKinds,
}

impl SessionStats {
    pub fn summary(&self) -> String {
        format!(
            "submitted={} completed={} errors={} cq_full={}",
            self.submitted.get(),
            self.completed.get(),
            self.errors.get(),
            self.cq_full.get()
        )
    }
}

impl WorkerStats {
    pub fn summary(&self) -> String {
        format!(
            "submitted={} completed={} errors={} cq_full={} sleeps={} wakeups={} sessions_added={} sessions_removed={}",
            self.submitted.get(),
            self.completed.get(),
            self.errors.get(),
            self.cq_full.get(),
            self.sleeps.get(),
            self.wakeups.get(),
            self.sessions_added.get(),
            self.sessions_removed.get()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds_count_each_code_and_the_unknown_ones() {
        let k = ErrorKinds::default();
        for c in ResultCode::ALL {
            k.record(c as i32);
        }
        k.record(ResultCode::OutOfBounds as i32);
        k.record(-1000);
        k.record(i32::MIN);
        let counts: Vec<_> = k.counts().collect();
        let mut want: Vec<_> = ResultCode::ALL
            .iter()
            .map(|c| (c.name(), 1 + (*c == ResultCode::OutOfBounds) as u64))
            .collect();
        want.push(("other", 2));
        assert_eq!(counts, want);
    }
}
