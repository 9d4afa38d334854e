//! One client session: the part shared between the control thread and the worker
//! ([`SessionShared`]) and the worker's ring ends ([`ActiveSession`]).

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use ring_proto::control_io::ring_doorbell;
use ring_proto::{CloseReason, Consumer, Cqe, Producer, ResultCode, SessionState, SharedArea, SharedMemory, Sqe};

use crate::ops;
use crate::region::Region;
use crate::stats::{SessionStats, WorkerStats};

pub struct SessionShared {
    pub id: u32,
    pub worker: usize,
    /// The whole region registered with UCX, made on the session's first remote request and
    /// released with the session. Declared before `region`: fields drop in order, and the
    /// registration must go before the memory is unmapped.
    pub ucx_registration: std::sync::OnceLock<engine::ucx::Registration>,
    pub region: Region,
    /// The engine's (non-blocking) write end of the session's CQ doorbell pipe; the client
    /// holds only the read end and sleeps on it for completions and state changes.
    pub cq_doorbell: OwnedFd,
    /// The engine's (non-blocking) read end of the session's SQ doorbell pipe, in the worker's
    /// epoll set; the client holds only the write end. Its own pipe, so no other session can
    /// read, fill or block this session's wake-ups.
    pub sq_doorbell: OwnedFd,
    pub stats: SessionStats,
    /// The client's process, from SO_PEERCRED (for logs).
    pub client_pid: i32,
    /// Failed export lookups of this session's READ/WRITEs (only its worker's data plane
    /// takes the lock; never contended).
    pub lookups: std::sync::Mutex<crate::lookup_throttle::LookupThrottle>,
}

impl SessionShared {
    /// Publishes a new session state (with its reason first) and wakes a sleeping client so
    /// it notices.
    pub fn set_state(&self, state: SessionState, reason: CloseReason) {
        let h = self.region.live();
        if reason != CloseReason::None {
            h.close_reason.store(reason as u32, Ordering::Relaxed);
        }
        // SYNC POINT: Release pairs with the client's Acquire load of `state`; for terminal
        // states it also publishes the final SQ head and every CQE posted before.
        h.state.store(state as u32, Ordering::Release);
        self.wake_client();
    }

    pub fn wake_client(&self) {
        // Never blocks (the engine's own O_NONBLOCK end); a full pipe already holds a wake-up.
        // On any other failure the client still sees the state or CQ tail at its next check.
        let _ = ring_doorbell(self.cq_doorbell.as_fd());
    }
}

/// Outcome of one pass over a session's SQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Entries taken and completed in this pass.
    Done(u32),
    /// The client corrupted a ring index; the session must be cut off.
    Broken(CloseReason),
    /// The client took pages away from its region (sigbus.rs replaced the mapping); the
    /// session must end without touching the region's memfd again.
    RegionLost,
}

/// The worker's side of a session.
pub struct ActiveSession {
    pub shared: Arc<SessionShared>,
    sq: Consumer<Sqe>,
    cq: Producer<Cqe>,
    /// Whether the last pass left entries behind for lack of CQ space (counts stalls once).
    cq_stalled: bool,
    /// Remote requests started and not yet completed; each holds a reserved CQ slot.
    inflight: u32,
}

/// The buffer area of the session: what a `SharedRange<SessionShared>` (the data plane's
/// handle on a range UCX reads or writes) covers; the range holds the session, hence its
/// region and its UCX registration, for as long as UCX may touch it.
impl SharedMemory for SessionShared {
    fn shared_area(&self) -> &SharedArea {
        self.region.buf()
    }
}

/// A request `pass` hands to the data plane: what the worker and the data plane exchange
/// one way (the completions, [`crate::dataplane::RemoteCompletion`], go the other).
pub struct RemoteRequest<'a> {
    pub session: &'a Arc<SessionShared>,
    pub user_data: u64,
    pub op: RemoteOp,
}

/// The remote operations (validated; every range is inside the session's buffer area).
#[derive(Debug, Clone, Copy)]
pub enum RemoteOp {
    Send(ops::SendRequest),
    Rma(ops::RmaRequest),
    ReadNeedle(ops::NeedleRequest),
    /// Export a range; the ticket (id, key) is written at `ticket_offset`.
    Export {
        offset: usize,
        len: usize,
        perms: u32,
        ticket_offset: usize,
    },
    Unexport {
        id: u64,
    },
}

/// What became of a [`RemoteRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// Started: its completion comes later, through `ActiveSession::complete`.
    Later,
    /// Finished (or refused) at once, with this CQE result.
    Now(i32),
}

/// Where `pass` sends requests that need UCX (the worker's data plane).
pub trait Remote {
    fn submit(&mut self, req: RemoteRequest<'_>) -> Submitted;
}

/// For passes that must not start remote work (draining).
pub struct NoRemote;

impl Remote for NoRemote {
    fn submit(&mut self, _: RemoteRequest<'_>) -> Submitted {
        Submitted::Now(ResultCode::ShuttingDown as i32)
    }
}

impl ActiveSession {
    pub fn new(shared: Arc<SessionShared>) -> Self {
        let (sq, cq) = shared.region.rings();
        // The region starts with NEED_WAKEUP set so that submissions made before this worker
        // adopted the session wake it; from now on it polls the session.
        sq.finish_sleep();
        Self {
            shared,
            sq,
            cq,
            cq_stalled: false,
            inflight: 0,
        }
    }

    pub fn id(&self) -> u32 {
        self.shared.id
    }

    /// Takes up to `max` entries, only as many as the CQ can take completions for (the
    /// admission rule: a completion can never be dropped; slots of requests still in flight
    /// stay reserved), executes them, and posts their completions. Remote requests go to
    /// `remote` and complete later through [`ActiveSession::complete`]. With `fail`, entries
    /// are completed with that error instead of executed.
    pub fn pass(&mut self, max: u32, fail: Option<ResultCode>, ws: &WorkerStats, remote: &mut dyn Remote) -> Pass {
        if self.shared.region.lost() {
            return Pass::RegionLost;
        }
        let ready = match self.sq.refresh_up_to(max) {
            0 => return Pass::Done(0),
            n => n,
        };
        let cq_free = match self.cq.free_at_least(ready + self.inflight) {
            Ok(n) => n.saturating_sub(self.inflight),
            Err(_) => return Pass::Broken(CloseReason::BadCqHead),
        };
        let n = ready.min(cq_free);
        let stalled = n < ready;
        if stalled && !self.cq_stalled {
            self.shared.stats.cq_full.add(1);
            ws.cq_full.add(1);
        }
        self.cq_stalled = stalled;
        if n == 0 {
            return Pass::Done(0);
        }
        let layout = *self.shared.region.layout();
        let mut invalid = 0u32;
        let mut posted = 0u32;
        for _ in 0..n {
            let sqe = self.sq.pop().expect("refresh counted it");
            let result = match fail {
                Some(code) => code as i32,
                None => match ops::validate(&sqe, &layout) {
                    Err(code) => {
                        invalid += 1;
                        code as i32
                    }
                    Ok(req) => {
                        let op = match req {
                            ops::Request::Send(r) => RemoteOp::Send(r),
                            ops::Request::Rma(r) => RemoteOp::Rma(r),
                            ops::Request::ReadNeedle(r) => RemoteOp::ReadNeedle(r),
                            ops::Request::Export {
                                offset,
                                len,
                                perms,
                                ticket_offset,
                            } => RemoteOp::Export {
                                offset,
                                len,
                                perms,
                                ticket_offset,
                            },
                            ops::Request::Unexport { id } => RemoteOp::Unexport { id },
                            local => {
                                // The client reads what a local request wrote only after the
                                // completion posted below (the CQ tail's Release store orders
                                // the bytes before it).
                                let r = ops::execute(local, self.shared.region.buf());
                                self.post(sqe.user_data, r, 0, ws);
                                posted += 1;
                                continue;
                            }
                        };
                        let req = RemoteRequest {
                            session: &self.shared,
                            user_data: sqe.user_data,
                            op,
                        };
                        match remote.submit(req) {
                            Submitted::Later => {
                                self.inflight += 1;
                                continue;
                            }
                            Submitted::Now(r) => r,
                        }
                    }
                },
            };
            self.post(sqe.user_data, result, 0, ws);
            posted += 1;
        }
        // Completions first: the CQ publication is on the client's critical path, the SQ head
        // is not (the client reads it only when its SQ looks full).
        let wake = posted > 0 && self.cq.publish();
        self.sq.release();
        if invalid > 0 {
            let ctl = self.sq.ring().ctl();
            // Engine-owned counter; the client only reads it.
            ctl.invalid.store(
                ctl.invalid.load(Ordering::Relaxed).wrapping_add(invalid),
                Ordering::Relaxed,
            );
        }
        if wake {
            self.shared.wake_client();
        }
        self.shared.stats.submitted.add(n as u64);
        ws.submitted.add(n as u64);
        Pass::Done(n)
    }

    /// Writes one completion into its reserved CQ slot (published by the caller).
    fn post(&mut self, user_data: u64, result: i32, flags: u16, ws: &WorkerStats) {
        if result < 0 {
            self.shared.stats.errors.add(1);
            self.shared.stats.error_kinds.record(result);
            ws.errors.add(1);
            ws.error_kinds.record(result);
        }
        self.shared.stats.completed.add(1);
        ws.completed.add(1);
        let pushed = self.cq.push(&Cqe {
            flags,
            ..Cqe::new(user_data, result)
        });
        debug_assert!(pushed.is_ok(), "admission reserved this CQ slot");
    }

    /// Completes a request that `pass` handed to the data plane.
    pub fn complete(&mut self, user_data: u64, result: i32, ws: &WorkerStats) {
        debug_assert!(self.inflight > 0);
        self.inflight = self.inflight.saturating_sub(1);
        self.post(user_data, result, 0, ws);
        if self.cq.publish() {
            self.shared.wake_client();
        }
    }

    /// Requests handed to the data plane and not completed yet.
    pub fn inflight(&self) -> u32 {
        self.inflight
    }

    /// Entries published in the SQ and not yet taken.
    pub fn pending(&mut self) -> u32 {
        self.sq.refresh()
    }

    /// Announces NEED_WAKEUP on the SQ, then checks whether a pass could do anything: an
    /// entry ready *and* CQ room for its completion. Returns true if the worker may sleep. A
    /// session stalled on a full CQ lets the worker sleep; the client wakes it after making
    /// room (SPEC.md §6, "The engine also sleeps on a full CQ": the fence in `announce_sleep`
    /// pairs with the client's fence after its CQ head release, as it pairs with the one after
    /// a publication).
    pub fn prepare_sleep(&mut self) -> bool {
        if self.shared.region.lost() {
            // Work to do: the next pass ends the session.
            return false;
        }
        self.sq.announce_sleep();
        if self.sq.refresh_up_to(1) == 0 {
            return true;
        }
        // An entry is ready. A corrupt CQ head reads as "work to do": the next pass finds it
        // and cuts the session.
        let room = self.cq.refresh().map_or(true, |room| room > self.inflight);
        if room {
            self.finish_sleep();
        }
        !room
    }

    pub fn finish_sleep(&self) {
        self.sq.finish_sleep();
    }
}
