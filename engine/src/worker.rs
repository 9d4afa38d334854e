//! Worker threads: each is pinned to one core, owns a set of sessions and busy-polls their
//! SQs. When idle for `idle-spin-us` it announces NEED_WAKEUP on every SQ and sleeps in
//! `epoll_wait` on its wake eventfd (the UCX worker's event fd joins the same epoll set in the
//! data-plane work, so a remote message wakes it like a local client does).

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use ring_proto::control_io::{drain_eventfd, new_eventfd, signal_eventfd};
use ring_proto::{CloseReason, ResultCode, SessionState};

use crate::session::{ActiveSession, Pass, SessionShared};
use crate::stats::WorkerStats;

/// Orders from the control thread.
pub enum Command {
    Add(Arc<SessionShared>),
    /// Stop serving a session. With `drain`, first complete what the client already published
    /// (graceful close); `state` and `reason` are stored in its header.
    Remove {
        id: u32,
        drain: bool,
        state: SessionState,
        reason: CloseReason,
    },
    /// Engine shutdown: fail what is queued, close every session, exit the thread.
    Shutdown {
        drain_timeout: Duration,
    },
}

/// Reports to the control thread.
#[derive(Debug)]
pub enum Event {
    /// The worker no longer touches the session; the control thread may drop it.
    Removed { id: u32 },
    /// The client broke the ring protocol; the worker stopped serving it.
    Broken { id: u32, reason: CloseReason },
}

/// The control thread's handle to a worker.
pub struct WorkerHandle {
    pub id: usize,
    pub core: usize,
    commands: Sender<Command>,
    /// Set when commands are queued; checked (Relaxed) by the worker on every loop turn so
    /// the hot loop does not touch the channel.
    pending: Arc<AtomicBool>,
    wake: Arc<OwnedFd>,
    pub stats: Arc<WorkerStats>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WorkerHandle {
    pub fn send(&self, cmd: Command) {
        // The worker only exits after Shutdown, which is the last command sent.
        let _ = self.commands.send(cmd);
        // SYNC POINT: Release pairs with the worker's Acquire swap of `pending`; the channel
        // itself orders the command.
        self.pending.store(true, Ordering::Release);
        self.wake();
    }

    /// The eventfd clients write to wake this worker.
    pub fn wake_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.wake.as_fd()
    }

    fn wake(&self) {
        let _ = signal_eventfd(self.wake.as_fd());
    }

    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct IdlePolicy {
    pub spin: Duration,
    pub spin_forever: bool,
}

pub fn spawn(
    id: usize,
    core: usize,
    idle: IdlePolicy,
    events: Sender<Event>,
    control_wake: Arc<OwnedFd>,
) -> std::io::Result<WorkerHandle> {
    let wake = Arc::new(new_eventfd()?);
    let (tx, rx) = std::sync::mpsc::channel();
    let pending = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(WorkerStats::default());
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    epoll.add(wake.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, 0))?;
    let mut w = Worker {
        id,
        sessions: Vec::new(),
        commands: rx,
        pending: pending.clone(),
        wake: wake.clone(),
        epoll,
        events,
        control_wake,
        stats: stats.clone(),
        idle,
    };
    let thread = std::thread::Builder::new()
        .name(format!("worker-{id}"))
        .spawn(move || {
            pin_to_core(core);
            tracing::info!(
                worker = id,
                core,
                spin_us = idle.spin.as_micros() as u64,
                spin_forever = idle.spin_forever,
                "worker started"
            );
            w.run();
        })?;
    Ok(WorkerHandle {
        id,
        core,
        commands: tx,
        pending,
        wake,
        stats,
        thread: Some(thread),
    })
}

fn pin_to_core(core: usize) {
    let mut set = nix::sched::CpuSet::new();
    let pinned = set
        .set(core)
        .and_then(|_| nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set));
    if let Err(e) = pinned {
        // Config validation checked the core exists; losing it afterwards (cgroup change) is
        // worth a warning, not a dead worker.
        tracing::warn!(core, error = %e, "could not pin worker; running unpinned");
    }
}

struct Worker {
    id: usize,
    sessions: Vec<ActiveSession>,
    commands: Receiver<Command>,
    pending: Arc<AtomicBool>,
    wake: Arc<OwnedFd>,
    epoll: Epoll,
    events: Sender<Event>,
    control_wake: Arc<OwnedFd>,
    stats: Arc<WorkerStats>,
    idle: IdlePolicy,
}

/// Entries taken from one session per pass, so one busy session cannot starve the others.
const PASS_BUDGET: u32 = 64;

impl Worker {
    fn run(&mut self) {
        let mut idle_since: Option<Instant> = None;
        loop {
            // SYNC POINT: Acquire pairs with the Release store in WorkerHandle::send.
            if self.pending.load(Ordering::Relaxed) && self.pending.swap(false, Ordering::Acquire) {
                if let Some(drain_timeout) = self.handle_commands() {
                    self.shutdown(drain_timeout);
                    return;
                }
            }
            let mut work = 0;
            let mut i = 0;
            while i < self.sessions.len() {
                match self.sessions[i].pass(PASS_BUDGET, None, &self.stats) {
                    Pass::Done(n) => {
                        work += n;
                        i += 1;
                    }
                    Pass::Broken(reason) => {
                        let s = self.sessions.swap_remove(i);
                        self.cut_off(s, reason);
                    }
                }
            }
            if work > 0 {
                idle_since = None;
                continue;
            }
            if self.idle.spin_forever {
                std::hint::spin_loop();
                continue;
            }
            let since = *idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() < self.idle.spin {
                std::hint::spin_loop();
                continue;
            }
            self.sleep();
            idle_since = None;
        }
    }

    /// Sleep/wake handshake, worker side: NEED_WAKEUP on every SQ, then a last look at each
    /// (inside `prepare_sleep`, after a SeqCst fence), then block until a client or the
    /// control thread signals the eventfd.
    fn sleep(&mut self) {
        let mut all_empty = true;
        for s in &mut self.sessions {
            if !s.prepare_sleep() {
                all_empty = false;
                break;
            }
        }
        if all_empty && !self.pending.load(Ordering::Acquire) {
            self.stats.sleeps.add(1);
            let mut events = [EpollEvent::empty(); 4];
            loop {
                match self.epoll.wait(&mut events, EpollTimeout::NONE) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => {
                        tracing::error!(worker = self.id, error = %e, "epoll_wait failed; spinning instead");
                        break;
                    }
                    Ok(_) => break,
                }
            }
            let _ = drain_eventfd(self.wake.as_fd());
            self.stats.wakeups.add(1);
        }
        for s in &self.sessions {
            s.finish_sleep();
        }
    }

    /// Applies queued commands; returns the drain timeout if shutdown was ordered.
    fn handle_commands(&mut self) -> Option<Duration> {
        while let Ok(cmd) = self.commands.try_recv() {
            match cmd {
                Command::Add(shared) => {
                    self.stats.sessions_added.add(1);
                    self.sessions.push(ActiveSession::new(shared));
                }
                Command::Remove {
                    id,
                    drain,
                    state,
                    reason,
                } => {
                    if let Some(pos) = self.sessions.iter().position(|s| s.id() == id) {
                        let mut s = self.sessions.swap_remove(pos);
                        if drain {
                            // Graceful close: complete what the client published before
                            // asking to close. Bounded by the ring size.
                            if let Ok(n) = s.pending() {
                                let _ = s.pass(n, None, &self.stats);
                            }
                        }
                        s.shared.set_state(state, reason);
                        self.release(s);
                    }
                }
                Command::Shutdown { drain_timeout } => return Some(drain_timeout),
            }
        }
        None
    }

    /// Engine shutdown: every entry already published is completed with ShuttingDown (waiting
    /// up to `drain_timeout` for clients to make CQ room), then each session is closed.
    fn shutdown(&mut self, drain_timeout: Duration) {
        let sessions = std::mem::take(&mut self.sessions);
        let deadline = Instant::now() + drain_timeout;
        for mut s in sessions {
            s.shared
                .set_state(SessionState::Draining, CloseReason::None);
            let reason = match s.pending() {
                Err(r) => r,
                Ok(mut left) => loop {
                    if left == 0 {
                        break CloseReason::EngineShutdown;
                    }
                    match s.pass(left, Some(ResultCode::ShuttingDown), &self.stats) {
                        Pass::Broken(r) => break r,
                        Pass::Done(n) => left -= n,
                    }
                    if left > 0 {
                        if Instant::now() >= deadline {
                            break CloseReason::DrainTimeout;
                        }
                        std::thread::sleep(Duration::from_micros(100));
                    }
                },
            };
            // Terminal state after the final SQ head store (inside `pass`): a client that sees
            // Closed knows exactly which entries were accepted.
            let state = if reason == CloseReason::EngineShutdown {
                SessionState::Closed
            } else {
                SessionState::Broken
            };
            s.shared.set_state(state, reason);
            self.release(s);
        }
    }

    fn cut_off(&mut self, s: ActiveSession, reason: CloseReason) {
        tracing::warn!(
            worker = self.id,
            session = s.id(),
            ?reason,
            "client broke the ring protocol; session cut off"
        );
        s.shared.set_state(SessionState::Broken, reason);
        let _ = self.events.send(Event::Broken { id: s.id(), reason });
        self.release(s);
    }

    fn release(&mut self, s: ActiveSession) {
        self.stats.sessions_removed.add(1);
        let id = s.id();
        drop(s);
        let _ = self.events.send(Event::Removed { id });
        let _ = signal_eventfd(self.control_wake.as_fd());
    }
}
