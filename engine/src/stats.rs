//! Counters per worker and per session. Each counter has a single writer (the worker thread
//! that owns it), so it is bumped with a plain load+store rather than a locked
//! read-modify-write; readers (logs, status, metrics) load it Relaxed and may see it slightly
//! stale, never torn.

use std::sync::atomic::{AtomicU64, Ordering};

/// A single-writer counter.
#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Only the owning worker thread may call this.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
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
}

#[derive(Default, Debug)]
pub struct WorkerStats {
    pub submitted: Counter,
    pub completed: Counter,
    pub errors: Counter,
    pub cq_full: Counter,
    pub sleeps: Counter,
    pub wakeups: Counter,
    pub sessions_added: Counter,
    pub sessions_removed: Counter,
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
