//! The I/O threads: volume file work that can block (a page fault on cold `.dat` data, the
//! first CRC of a large needle, catching up on an `.idx`, remapping a grown `.dat`) runs
//! here, never on a busy-polling worker, whose every session would wait behind one slow disk
//! read. Config: `seaweedfs.io-threads`, `seaweedfs.io-cores`.
//!
//! A worker hands a task to the pool ([`IoPool::submit`]: a bounded queue, refused when
//! full so a flood of cold reads costs the peers that send it, not the worker's memory) and
//! the task hands its result back through the worker's [`Handback`]: a queue the worker
//! checks with one Relaxed load per turn, and the worker's own wake eventfd for when it
//! sleeps. UCX calls stay on the worker's thread: a task only prepares what the worker sends.

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use ring_proto::control_io::signal_eventfd;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Work for an I/O thread.
pub type Task = Box<dyn FnOnce() + Send>;

/// [`IoPool::submit`]: the queue holds `max_queued` tasks already.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the I/O queue is full ({0} tasks waiting)")]
pub struct QueueFull(pub usize);

struct Shared {
    queue: Mutex<VecDeque<Task>>,
    /// Signalled when a task is queued; the threads wait on it when the queue is empty.
    more: Condvar,
    max_queued: usize,
    done: AtomicU64,
    refused: AtomicU64,
}

/// A fixed set of I/O threads and their queue. The threads live as long as the engine.
pub struct IoPool {
    shared: Arc<Shared>,
    threads: usize,
}

impl IoPool {
    /// Starts `threads` threads, each allowed on every core of `cores` (none: wherever the
    /// scheduler puts them). At most `max_queued` tasks wait at a time.
    pub fn start(threads: usize, cores: &[usize], max_queued: usize) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(VecDeque::new()),
            more: Condvar::new(),
            max_queued,
            done: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        });
        for i in 0..threads {
            let shared = shared.clone();
            let cores = cores.to_vec();
            std::thread::Builder::new()
                .name(format!("volume-io-{i}"))
                .spawn(move || {
                    allow_cores(&cores);
                    run(&shared);
                })?;
        }
        Ok(Self { shared, threads })
    }

    /// Queues `task` for the next free I/O thread.
    pub fn submit(&self, task: Task) -> Result<(), QueueFull> {
        let mut q = lock(&self.shared.queue);
        if q.len() >= self.shared.max_queued {
            self.shared.refused.fetch_add(1, Ordering::Relaxed);
            return Err(QueueFull(q.len()));
        }
        q.push_back(task);
        drop(q);
        self.shared.more.notify_one();
        Ok(())
    }

    pub fn stats(&self) -> IoPoolStats {
        IoPoolStats {
            threads: self.threads,
            queued: lock(&self.shared.queue).len(),
            done: self.shared.done.load(Ordering::Relaxed),
            refused: self.shared.refused.load(Ordering::Relaxed),
        }
    }
}

/// What `engine status` and the metrics endpoint show of the pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IoPoolStats {
    pub threads: usize,
    /// Tasks waiting for a thread now.
    pub queued: usize,
    /// Tasks run since start.
    pub done: u64,
    /// Tasks refused because the queue was full.
    pub refused: u64,
}

fn run(shared: &Shared) {
    loop {
        let task = {
            let mut q = lock(&shared.queue);
            loop {
                if let Some(t) = q.pop_front() {
                    break t;
                }
                q = shared.more.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        };
        // A panicking task (a bug) must not take the thread with it.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(task)).is_err() {
            tracing::error!("an I/O task panicked; the thread goes on");
        }
        shared.done.fetch_add(1, Ordering::Relaxed);
    }
}

fn allow_cores(cores: &[usize]) {
    if cores.is_empty() {
        return;
    }
    let mut set = nix::sched::CpuSet::new();
    let r = cores
        .iter()
        .try_for_each(|&c| set.set(c))
        .and_then(|_| nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set));
    if let Err(e) = r {
        // Config validation checked the cores exist; losing them later (a cgroup change) is
        // worth a warning, not a lost I/O thread.
        tracing::warn!(?cores, error = %e, "could not pin an I/O thread; running unpinned");
    }
}

/// Results going back to one polling thread: I/O threads [`push`](Handback::push), the
/// polling thread [`take`](Handback::take)s on each turn, and sleeps on `wake`, which every
/// push signals.
pub struct Handback<T> {
    /// Set after a push; the polling thread's cheap check (one Relaxed load per turn).
    ready: AtomicBool,
    items: Mutex<Vec<T>>,
    wake: Arc<OwnedFd>,
}

impl<T> Handback<T> {
    /// `wake`: the polling thread's wake eventfd (in its epoll set, drained after each sleep).
    pub fn new(wake: Arc<OwnedFd>) -> Self {
        Self {
            ready: AtomicBool::new(false),
            items: Mutex::new(Vec::new()),
            wake,
        }
    }

    /// Hands `item` back and wakes the polling thread if it sleeps.
    pub fn push(&self, item: T) {
        lock(&self.items).push(item);
        // SYNC POINT: Release pairs with the Acquire swap in `take`: seeing the flag means
        // seeing the item. The eventfd write comes after the flag, so a polling thread woken
        // by it (or finding it already signalled at its next epoll_wait) sees the flag too:
        // no item waits for an unrelated wake-up.
        self.ready.store(true, Ordering::Release);
        if let Err(e) = signal_eventfd(self.wake.as_fd()) {
            tracing::error!(error = %e, "cannot wake a worker for a finished volume read");
        }
    }

    /// Moves what was handed back into `out` (nothing, after one load, when nothing was).
    pub fn take(&self, out: &mut Vec<T>) {
        if !self.ready.load(Ordering::Relaxed) {
            return;
        }
        // SYNC POINT: Acquire pairs with the Release store in `push`.
        self.ready.swap(false, Ordering::Acquire);
        out.append(&mut lock(&self.items));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn tasks_run_and_results_come_back_with_a_wake_up() {
        let wake = Arc::new(ring_proto::control_io::new_eventfd().unwrap());
        let back = Arc::new(Handback::new(wake.clone()));
        let pool = IoPool::start(2, &[], 64).unwrap();
        for i in 0..10u32 {
            let back = back.clone();
            pool.submit(Box::new(move || back.push(i))).unwrap();
        }
        let mut got = Vec::new();
        while got.len() < 10 {
            // Block on the eventfd as a sleeping worker does.
            let mut fds = [nix::poll::PollFd::new(wake.as_fd(), nix::poll::PollFlags::POLLIN)];
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE).unwrap();
            ring_proto::control_io::drain_eventfd(wake.as_fd()).unwrap();
            back.take(&mut got);
        }
        got.sort();
        assert_eq!(got, (0..10).collect::<Vec<_>>());
        let mut none = Vec::new();
        back.take(&mut none);
        assert!(none.is_empty());
        // `done` counts a task after it returns, just after its push: wait for the last.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while pool.stats().done < 10 && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert_eq!(pool.stats().done, 10);
    }

    #[test]
    fn a_panicking_task_leaves_the_thread_running() {
        let pool = IoPool::start(1, &[], 4).unwrap();
        pool.submit(Box::new(|| panic!("a bug"))).unwrap();
        let (tx, rx) = mpsc::channel();
        pool.submit(Box::new(move || tx.send(7).unwrap())).unwrap();
        // The bound only turns a dead thread's hang into a failure.
        let got = rx.recv_timeout(std::time::Duration::from_secs(30));
        assert_eq!(got, Ok(7), "the thread died with the panicking task");
    }

    #[test]
    fn a_full_queue_refuses() {
        let pool = IoPool::start(1, &[], 2).unwrap();
        // Hold the one thread, then fill the queue.
        let (started_tx, started_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        pool.submit(Box::new(move || {
            started_tx.send(()).unwrap();
            go_rx.recv().unwrap();
        }))
        .unwrap();
        started_rx.recv().unwrap();
        pool.submit(Box::new(|| {})).unwrap();
        pool.submit(Box::new(|| {})).unwrap();
        assert_eq!(pool.submit(Box::new(|| {})), Err(QueueFull(2)));
        let s = pool.stats();
        assert_eq!((s.queued, s.refused), (2, 1));
        go_tx.send(()).unwrap();
    }
}
