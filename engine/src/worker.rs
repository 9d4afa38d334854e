//! Worker threads: each is pinned to one core, owns a set of sessions and busy-polls their
//! SQs. When idle for `idle-spin-us` it announces NEED_WAKEUP on every SQ and sleeps in
//! `epoll_wait` on its own wake eventfd (the control thread's commands; no client holds it),
//! every session's SQ doorbell pipe (one per session, so a client can only ever silence its
//! own wake-ups) and the UCX worker's event fd (a remote message wakes it like a client).

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use ring_proto::control_io::{drain_doorbell, drain_eventfd, new_eventfd, signal_eventfd, Doorbell};
use ring_proto::{CloseReason, ResultCode, SessionState};

use crate::dataplane::{DataPlane, UcxSettings};
use crate::session::{ActiveSession, NoRemote, Pass, Remote, RemoteRequest, SessionShared, Submitted};
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
    /// Peer registrations were released: the wake-up alone is the message (the next pass over
    /// the data plane closes connections to released peers).
    PeersReleased,
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

    fn wake(&self) {
        let _ = signal_eventfd(self.wake.as_fd());
    }

    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub use crate::idle::IdlePolicy;
use crate::idle::{IdleSpin, Next, ThreadCpuTime};

pub fn spawn(
    id: usize,
    core: usize,
    idle: IdlePolicy,
    events: Sender<Event>,
    control_wake: Arc<OwnedFd>,
    ucx: Arc<UcxSettings>,
) -> std::io::Result<WorkerHandle> {
    let wake = Arc::new(new_eventfd()?);
    let (tx, rx) = std::sync::mpsc::channel();
    let pending = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(WorkerStats::default());
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    epoll.add(wake.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, 0))?;
    let (pending2, wake2, stats2) = (pending.clone(), wake.clone(), stats.clone());
    // The worker reports whether it could set up what the config asks of it (the UCX
    // listener) before the engine declares itself ready.
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<Result<(), String>>(1);
    let thread = std::thread::Builder::new()
        .name(format!("worker-{id}"))
        .spawn(move || {
            // Pinned first: the move to the core is not a preemption the idle spin should see.
            pin_to_core(core);
            // Built on its own thread: the UCX worker inside the data plane is single-threaded
            // and never leaves this thread (nor do the idle spin's thread-own counts).
            let mut w = Worker {
                id,
                sessions: HashMap::new(),
                closing: HashMap::new(),
                commands: rx,
                pending: pending2,
                wake: wake2,
                epoll,
                events,
                control_wake,
                stats: stats2,
                idle: IdleSpin::new(idle, ThreadCpuTime),
                contention_logged: None,
                ucx,
                plane: None,
            };
            if id == 0 {
                if let Some(addr) = w.ucx.listen {
                    w.plane = create_plane(&w.ucx, &w.epoll, &w.wake, id, true);
                    if w.plane.is_none() {
                        let _ = ready_tx.send(Err(format!("ucx.listen = \"{addr}\": cannot listen there (see the error above); free the address or change ucx.listen")));
                        return;
                    }
                }
            }
            let _ = ready_tx.send(Ok(()));
            tracing::info!(
                worker = id,
                core,
                spin_us = idle.spin.as_micros() as u64,
                spin_forever = idle.spin_forever,
                "worker started"
            );
            w.run();
        })?;
    match ready_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(msg)) => return Err(std::io::Error::other(msg)),
        Err(_) => return Err(std::io::Error::other(format!("worker {id} died during start-up"))),
    }
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
    /// By session id: remote completions find their session with one lookup.
    sessions: HashMap<u32, ActiveSession>,
    /// Sessions removed while remote requests were in flight: finalized (terminal state,
    /// released) once those complete, so every accepted request still gets its completion.
    closing: HashMap<u32, (ActiveSession, SessionState, CloseReason)>,
    commands: Receiver<Command>,
    pending: Arc<AtomicBool>,
    wake: Arc<OwnedFd>,
    epoll: Epoll,
    events: Sender<Event>,
    control_wake: Arc<OwnedFd>,
    stats: Arc<WorkerStats>,
    idle: IdleSpin,
    /// When a preempted spin was last logged (rate-limited to one line a minute).
    contention_logged: Option<Instant>,
    ucx: Arc<UcxSettings>,
    /// This worker's UCX worker and its remote requests; created on first use (or at start
    /// on the worker that owns the engine's listener).
    plane: Option<DataPlane>,
}

/// epoll data of a session's SQ doorbell: this bit plus the session id (0 is the worker's own
/// wake eventfd, 1 the UCX worker's event fd).
const DOORBELL_TAG: u64 = 1 << 32;

fn doorbell_session(data: u64) -> Option<u32> {
    (data & DOORBELL_TAG != 0).then_some(data as u32)
}

/// Entries taken from one session per pass, so one busy session cannot starve the others.
const PASS_BUDGET: u32 = 64;

/// Lends a worker's data plane to a session pass, creating it on first use.
struct PlaneSlot<'a> {
    plane: &'a mut Option<DataPlane>,
    ucx: &'a Arc<UcxSettings>,
    epoll: &'a Epoll,
    wake: &'a Arc<OwnedFd>,
    worker: usize,
}

impl PlaneSlot<'_> {
    fn plane(&mut self) -> Result<&mut DataPlane, ResultCode> {
        if self.plane.is_none() {
            *self.plane =
                Some(create_plane(self.ucx, self.epoll, self.wake, self.worker, false).ok_or(ResultCode::Internal)?);
        }
        Ok(self.plane.as_mut().expect("created above"))
    }
}

impl Remote for PlaneSlot<'_> {
    fn submit(&mut self, req: RemoteRequest<'_>) -> Submitted {
        match self.plane() {
            Ok(p) => p.submit(req),
            Err(code) => Submitted::Now(code as i32),
        }
    }
}

fn create_plane(
    ucx: &Arc<UcxSettings>,
    epoll: &Epoll,
    wake: &Arc<OwnedFd>,
    worker: usize,
    listen: bool,
) -> Option<DataPlane> {
    match DataPlane::new(ucx.clone(), listen, worker, wake.clone()) {
        Ok(p) => {
            // Safety: the fd belongs to the UCX worker inside `p`, which lives (in the Worker)
            // as long as the epoll registration matters; it is removed from epoll implicitly
            // when UCX closes it.
            let fd = unsafe { BorrowedFd::borrow_raw(p.event_fd()) };
            if let Err(e) = epoll.add(fd, EpollEvent::new(EpollFlags::EPOLLIN, 1)) {
                tracing::error!(worker, error = %e, "cannot watch the UCX event fd; remote requests may wait for local activity");
            }
            tracing::info!(worker, "UCX worker created");
            Some(p)
        }
        Err(e) => {
            tracing::error!(worker, error = %e, "cannot create a UCX worker");
            None
        }
    }
}

impl Worker {
    fn run(&mut self) {
        let mut turns = 0u32;
        loop {
            // SYNC POINT: Acquire pairs with the Release store in WorkerHandle::send.
            if self.pending.load(Ordering::Relaxed) && self.pending.swap(false, Ordering::Acquire) {
                if let Some(drain_timeout) = self.handle_commands() {
                    self.shutdown(drain_timeout);
                    return;
                }
            }
            let mut work = self.poll_sessions();
            if self.plane.is_some() {
                turns = turns.wrapping_add(1);
                // Deadlines are checked every 1024 turns (and on waking from a sleep bounded by
                // the earliest one), not on every idle turn: a clock read and a scan of the
                // pending requests on each turn would delay noticing the reply.
                work += self.poll_plane(turns.is_multiple_of(1024));
            }
            if !self.closing.is_empty() {
                self.finish_closing();
            }
            if work > 0 {
                self.idle.busy();
                continue;
            }
            let preempted_before = self.stats.spins_preempted.get();
            if self.idle.idle_turn(&self.stats.spins_preempted) == Next::Spin {
                std::hint::spin_loop();
                continue;
            }
            if self.stats.spins_preempted.get() != preempted_before {
                self.log_contention();
            }
            self.sleep();
            if self.plane.is_some() {
                // The sleep may have ended at a request deadline.
                self.poll_plane(true);
            }
            self.idle.woke();
        }
    }

    /// Says, at most once a minute, that this worker's core is shared (idle.rs).
    fn log_contention(&mut self) {
        let now = Instant::now();
        if self
            .contention_logged
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(60))
        {
            return;
        }
        self.contention_logged = Some(now);
        tracing::warn!(
            worker = self.id,
            spins_preempted = self.stats.spins_preempted.get(),
            short_spin_us = crate::idle::CONTENDED_SPIN.as_micros() as u64,
            "worker preempted while idle-spinning: another thread had its core for a while; the worker now sleeps after a short spin while that lasts (give it a core of its own: workers.cores, isolcpus)"
        );
    }

    /// One pass over every session; returns the entries taken.
    fn poll_sessions(&mut self) -> u32 {
        let mut work = 0;
        let mut ended = Vec::new();
        let mut remote = PlaneSlot {
            plane: &mut self.plane,
            ucx: &self.ucx,
            epoll: &self.epoll,
            wake: &self.wake,
            worker: self.id,
        };
        for (&id, s) in self.sessions.iter_mut() {
            match s.pass(PASS_BUDGET, None, &self.stats, &mut remote) {
                Pass::Done(n) => work += n,
                other => ended.push((id, other)),
            }
        }
        for (id, how) in ended {
            let s = self.sessions.remove(&id).expect("just polled");
            match how {
                Pass::Broken(reason) => self.cut_off(s, reason),
                _ => self.region_lost(s),
            }
        }
        work
    }

    /// Progresses UCX and posts the completions it produced; `expire` also fails requests
    /// past their deadline. Returns 1 if anything happened.
    fn poll_plane(&mut self, expire: bool) -> u32 {
        let Worker {
            plane,
            sessions,
            closing,
            stats,
            ..
        } = self;
        let Some(p) = plane.as_mut() else { return 0 };
        let any = p.poll();
        if expire && p.pending() > 0 {
            p.expire(Instant::now());
        }
        let mut delivered = 0;
        for c in p.take_completions() {
            delivered += 1;
            let target = match sessions.get_mut(&c.session) {
                Some(s) => Some(s),
                None => closing.get_mut(&c.session).map(|(s, _, _)| s),
            };
            // A session that is gone entirely had no reader left; its completion is moot.
            if let Some(s) = target {
                s.complete(c.user_data, c.result, stats);
            }
        }
        (any || delivered > 0) as u32
    }

    fn finish_closing(&mut self) {
        let finished: Vec<u32> = self
            .closing
            .iter()
            .filter(|(_, (s, _, _))| s.inflight() == 0)
            .map(|(&id, _)| id)
            .collect();
        for id in finished {
            let (s, state, reason) = self.closing.remove(&id).expect("listed");
            s.shared.set_state(state, reason);
            self.release(s);
        }
    }

    /// Sleep/wake handshake, worker side: NEED_WAKEUP on every SQ, then a last look at each
    /// (inside `prepare_sleep`, after a SeqCst fence), then block until a client, the control
    /// thread or UCX (its event fd, armed) signals. With remote requests pending, the sleep
    /// ends by the earliest request deadline so timeouts fire.
    fn sleep(&mut self) {
        let mut all_empty = true;
        for s in self.sessions.values_mut() {
            if !s.prepare_sleep() {
                all_empty = false;
                break;
            }
        }
        let armed = self.plane.as_ref().is_none_or(|p| p.arm());
        if all_empty && armed && !self.pending.load(Ordering::Acquire) {
            self.stats.sleeps.add(1);
            let timeout = match self.plane.as_ref().and_then(|p| p.next_deadline()) {
                Some(d) => {
                    let ms = d.saturating_duration_since(Instant::now()).as_millis().min(60_000) as u16;
                    EpollTimeout::from(ms.max(1))
                }
                None => EpollTimeout::NONE,
            };
            let mut events = [EpollEvent::empty(); 64];
            let fired = loop {
                match self.epoll.wait(&mut events, timeout) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => {
                        tracing::error!(worker = self.id, error = %e, "epoll_wait failed; spinning instead");
                        break 0;
                    }
                    Ok(n) => break n,
                }
            };
            let _ = drain_eventfd(self.wake.as_fd());
            // Level-triggered: a doorbell left unread (beyond these 64 events) fires again at
            // the next sleep, so none is lost.
            for ev in &events[..fired] {
                if let Some(id) = doorbell_session(ev.data()) {
                    self.drain_doorbell(id);
                }
            }
            self.stats.wakeups.add(1);
        }
        for s in self.sessions.values() {
            s.finish_sleep();
        }
    }

    /// Applies queued commands; returns the drain timeout if shutdown was ordered.
    fn handle_commands(&mut self) -> Option<Duration> {
        while let Ok(cmd) = self.commands.try_recv() {
            match cmd {
                Command::Add(shared) => {
                    self.stats.sessions_added.add(1);
                    let event = EpollEvent::new(EpollFlags::EPOLLIN, DOORBELL_TAG | shared.id as u64);
                    if let Err(e) = self.epoll.add(shared.sq_doorbell.as_fd(), event) {
                        // Without its doorbell the session is still served whenever the worker
                        // is awake; say so rather than refuse it.
                        tracing::error!(worker = self.id, session = shared.id, error = %e, "cannot watch the session's SQ doorbell");
                    }
                    self.sessions.insert(shared.id, ActiveSession::new(shared));
                }
                Command::Remove {
                    id,
                    drain,
                    state,
                    reason,
                } => {
                    if let Some(mut s) = self.sessions.remove(&id) {
                        if drain {
                            // Graceful close: take what the client published before asking
                            // to close (remote requests among them complete later).
                            let n = s.pending();
                            let mut remote = PlaneSlot {
                                plane: &mut self.plane,
                                ucx: &self.ucx,
                                epoll: &self.epoll,
                                wake: &self.wake,
                                worker: self.id,
                            };
                            let _ = s.pass(n, None, &self.stats, &mut remote);
                        }
                        if s.inflight() > 0 {
                            self.closing.insert(id, (s, state, reason));
                        } else {
                            s.shared.set_state(state, reason);
                            self.release(s);
                        }
                    }
                }
                Command::PeersReleased => {}
                Command::Shutdown { drain_timeout } => return Some(drain_timeout),
            }
        }
        None
    }

    /// Engine shutdown: every entry already published is completed with ShuttingDown and
    /// remote requests in flight get up to `drain_timeout` to finish (then ShuttingDown),
    /// waiting as long for clients to make CQ room; then each session is closed.
    fn shutdown(&mut self, drain_timeout: Duration) {
        let deadline = Instant::now() + drain_timeout;
        let closing = std::mem::take(&mut self.closing);
        self.sessions.extend(closing.into_iter().map(|(id, (s, _, _))| (id, s)));
        let mut reasons = HashMap::with_capacity(self.sessions.len());
        for (&id, s) in self.sessions.iter_mut() {
            s.shared.set_state(SessionState::Draining, CloseReason::None);
            let mut left = s.pending();
            let reason = loop {
                if left == 0 {
                    break CloseReason::EngineShutdown;
                }
                match s.pass(left, Some(ResultCode::ShuttingDown), &self.stats, &mut NoRemote) {
                    Pass::Broken(r) => break r,
                    Pass::RegionLost => break CloseReason::EngineShutdown,
                    Pass::Done(n) => left -= n,
                }
                if left > 0 {
                    if Instant::now() >= deadline {
                        break CloseReason::DrainTimeout;
                    }
                    std::thread::sleep(Duration::from_micros(100));
                }
            };
            reasons.insert(id, reason);
        }
        // Remote requests in flight: let them finish until the deadline, then fail them.
        while self.sessions.values().any(|s| s.inflight() > 0) && Instant::now() < deadline {
            if self.poll_plane(true) == 0 {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
        if let Some(p) = self.plane.take() {
            for c in p.shutdown() {
                if let Some(s) = self.sessions.get_mut(&c.session) {
                    s.complete(c.user_data, c.result, &self.stats);
                }
            }
        }
        for (id, s) in std::mem::take(&mut self.sessions) {
            let reason = reasons.get(&id).copied().unwrap_or(CloseReason::EngineShutdown);
            // Terminal state after the final SQ head store (inside `pass`): a client that sees
            // Closed knows exactly which entries were accepted.
            let state = match reason {
                CloseReason::BadSqTail | CloseReason::BadCqHead => SessionState::Broken,
                _ => SessionState::Closed,
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

    /// The client took pages away from its region and the SIGBUS handler replaced them
    /// (sigbus.rs): the session ends at once. Its header and rings are now private anonymous
    /// memory the client cannot see, so the client learns it from its control connection
    /// closing (SPEC.md §3); remote requests in flight finish into that memory first.
    fn region_lost(&mut self, s: ActiveSession) {
        tracing::error!(
            worker = self.id,
            session = s.id(),
            client_pid = s.shared.client_pid,
            regions_lost_total = crate::sigbus::regions_lost(),
            "client removed pages from its region (memfd hole punched with no memory left to refill it); session ended"
        );
        if s.inflight() > 0 {
            self.closing
                .insert(s.id(), (s, SessionState::Broken, CloseReason::None));
        } else {
            s.shared.set_state(SessionState::Broken, CloseReason::None);
            self.release(s);
        }
    }

    /// Consumes a session's SQ doorbell. A client that closed its end (hang-up) would make the
    /// level-triggered epoll fire forever: its doorbell leaves the set (only that session can
    /// no longer wake the worker; it closed its own doorbell).
    fn drain_doorbell(&mut self, id: u32) {
        let Some(s) = self
            .sessions
            .get(&id)
            .or_else(|| self.closing.get(&id).map(|(s, _, _)| s))
        else {
            return;
        };
        match drain_doorbell(s.shared.sq_doorbell.as_fd()) {
            Ok(Doorbell::Hangup) | Err(_) => {
                tracing::info!(
                    worker = self.id,
                    session = id,
                    "client closed its SQ doorbell; no longer watched"
                );
                let _ = self.epoll.delete(s.shared.sq_doorbell.as_fd());
            }
            Ok(_) => {}
        }
    }

    fn release(&mut self, s: ActiveSession) {
        self.stats.sessions_removed.add(1);
        let id = s.id();
        // The Arc may outlive this (a metrics scrape), so leave the epoll set explicitly.
        let _ = self.epoll.delete(s.shared.sq_doorbell.as_fd());
        // Its exports end with it; their memory is released once peers acknowledged.
        self.ucx.exports.revoke_session(id);
        drop(s);
        let _ = self.events.send(Event::Removed { id });
        let _ = signal_eventfd(self.control_wake.as_fd());
    }
}
