//! Rust client of the seaweed ring engine.
//!
//! ```no_run
//! use ring_client::{Session, SessionOptions};
//! use ring_proto::{opcode, Sqe};
//!
//! let mut s = Session::connect(&ring_client::default_socket_path(), SessionOptions::default())?;
//! s.submit(&Sqe { opcode: opcode::NOP, user_data: 7, ..Default::default() })?;
//! let cqe = s.wait_cqe(std::time::Duration::from_micros(50), None)?;
//! assert_eq!((cqe.user_data, cqe.result), (7, 0));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The hot path (`submit`, `submission`, `completions`, the spinning part of `wait_cqe`)
//! makes no system call unless the engine sleeps and must be woken.

mod error;
mod region;

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
use ring_proto::control::{ControlErrorCode, Message, WELCOME_FDS};
use ring_proto::control_io::{self, drain_doorbell, ring_doorbell, RecvError};
use ring_proto::{CloseReason, Consumer, Cqe, Producer, RegionLayout, SessionState, Sqe, LAYOUT_VERSION};

pub use error::{CloseError, ConnectError, SubmitError, WaitError};
use region::Region;

/// The engine's default control socket: `$XDG_RUNTIME_DIR/seaweed-ring/engine.sock`, or
/// `/tmp/seaweed-ring-<uid>/engine.sock` without XDG_RUNTIME_DIR. The engine uses the same rule.
pub fn default_socket_path() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => Path::new(&dir).join("seaweed-ring/engine.sock"),
        _ => PathBuf::from(format!("/tmp/seaweed-ring-{}/engine.sock", nix::unistd::getuid())),
    }
}

/// What to ask of the engine. Zero sizes take the engine's defaults.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    pub sq_entries: u32,
    pub cq_entries: u32,
    pub buf_size: u64,
    /// Run a background thread that keeps the lease alive while the session is idle.
    pub keepalive: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            sq_entries: 0,
            cq_entries: 0,
            buf_size: 0,
            keepalive: true,
        }
    }
}

/// One session with the engine: a control connection and a mapped region.
pub struct Session {
    sq: Producer<Sqe>,
    cq: Consumer<Cqe>,
    region: Arc<Region>,
    ctl: OwnedFd,
    /// Write end of the session's SQ doorbell (wakes its worker).
    sq_doorbell: OwnedFd,
    /// Read end of the session's CQ doorbell (the engine rings it for completions and states).
    cq_doorbell: OwnedFd,
    session_id: u32,
    worker: u32,
    keepalive: Option<Keepalive>,
}

impl Session {
    /// Opens a session: handshake on the control socket, map the region, check its header.
    pub fn connect(path: &Path, opts: SessionOptions) -> Result<Self, ConnectError> {
        let ctl = socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None)
            .map_err(|e| ConnectError::Io(e.into()))?;
        let addr = UnixAddr::new(path).map_err(|e| ConnectError::Io(e.into()))?;
        connect(ctl.as_raw_fd(), &addr).map_err(|e| match e {
            nix::errno::Errno::ENOENT | nix::errno::Errno::ECONNREFUSED => {
                ConnectError::EngineNotRunning { path: path.to_owned() }
            }
            e => ConnectError::Io(e.into()),
        })?;
        let hello = Message::Hello {
            layout_version: LAYOUT_VERSION,
            sq_entries: opts.sq_entries,
            cq_entries: opts.cq_entries,
            buf_size: opts.buf_size,
        };
        control_io::send(ctl.as_fd(), &hello, &[]).map_err(ConnectError::Io)?;
        let (msg, fds) = control_io::recv(ctl.as_fd()).map_err(|e| match e {
            RecvError::Eof => ConnectError::EngineNotRunning { path: path.to_owned() },
            e => ConnectError::Protocol(e.to_string()),
        })?;
        let (session_id, worker, region_size) = match msg {
            Message::Welcome {
                session_id,
                worker,
                region_size,
            } => (session_id, worker, region_size),
            Message::Error { code, message } => {
                return Err(ConnectError::Rejected {
                    code: ControlErrorCode::from_u32(code),
                    message,
                })
            }
            other => return Err(ConnectError::Protocol(format!("expected Welcome, got {other:?}"))),
        };
        let [region_fd, sq_doorbell, cq_doorbell]: [OwnedFd; WELCOME_FDS] =
            fds.try_into().map_err(|v: Vec<OwnedFd>| {
                ConnectError::Protocol(format!("Welcome carried {} fds, expected 3", v.len()))
            })?;
        let region = Arc::new(Region::map(region_fd, region_size)?);
        let (sq, cq) = region.rings();
        let keepalive = (opts.keepalive && region.header().lease_ms > 0).then(|| Keepalive::start(region.clone()));
        Ok(Self {
            sq,
            cq,
            region,
            ctl,
            sq_doorbell,
            cq_doorbell,
            session_id,
            worker,
            keepalive,
        })
    }

    pub fn session_id(&self) -> u32 {
        self.session_id
    }

    /// The engine worker serving this session.
    pub fn worker(&self) -> u32 {
        self.worker
    }

    pub fn layout(&self) -> &RegionLayout {
        self.region.layout()
    }

    /// The session state as the engine last stored it.
    pub fn state(&self) -> SessionState {
        // SYNC POINT: Acquire pairs with the engine's Release store of the state.
        let v = self.region.header().state.load(Ordering::Acquire);
        SessionState::from_u32(v).unwrap_or(SessionState::Broken)
    }

    pub fn close_reason(&self) -> Option<CloseReason> {
        CloseReason::from_u32(self.region.header().close_reason.load(Ordering::Relaxed))
    }

    /// Submits one entry and wakes the engine if it sleeps.
    pub fn submit(&mut self, sqe: &Sqe) -> Result<(), SubmitError> {
        let mut q = self.submission();
        q.push(sqe)?;
        q.sync()
    }

    /// A batching view of the SQ: push entries, they are published (and the engine woken if
    /// needed) by [`SubmissionQueue::sync`] or when the view is dropped.
    pub fn submission(&mut self) -> SubmissionQueue<'_> {
        SubmissionQueue {
            session: self,
            pushed: 0,
        }
    }

    /// A view of the completions ready now; slots are handed back when the view drops.
    pub fn completions(&mut self) -> CompletionQueue<'_> {
        self.cq.refresh();
        CompletionQueue { session: self }
    }

    /// Waits for one completion: spins for `spin`, then sleeps on the CQ doorbell until
    /// the engine signals, the engine dies, or `timeout` passes.
    pub fn wait_cqe(&mut self, spin: Duration, timeout: Option<Duration>) -> Result<Cqe, WaitError> {
        let start = Instant::now();
        loop {
            if let Some(c) = self.try_cqe()? {
                return Ok(c);
            }
            let waited = start.elapsed();
            if timeout.is_some_and(|t| waited >= t) {
                return Err(WaitError::Timeout);
            }
            if waited < spin {
                std::hint::spin_loop();
                continue;
            }
            self.check_alive()?;
            if self.cq.prepare_sleep() {
                let left = timeout.map(|t| t.saturating_sub(start.elapsed()));
                let r = self.sleep(left);
                self.cq.finish_sleep();
                r?;
            }
        }
    }

    /// Pops one completion if one is ready (no system call).
    pub fn try_cqe(&mut self) -> Result<Option<Cqe>, WaitError> {
        if self.cq.cached_ready() == 0 && self.cq.refresh() == 0 {
            return Ok(None);
        }
        let c = self.cq.pop();
        self.release_cq()?;
        Ok(c)
    }

    /// Hands reaped CQ slots back. With more requests in flight than the CQ holds, the engine
    /// may be asleep waiting for exactly this room: then look at its NEED_WAKEUP flag (after
    /// the fence in `consumer_needs_wakeup`) and wake it.
    fn release_cq(&mut self) -> Result<(), WaitError> {
        self.cq.release();
        let in_flight = self.sq.local_tail().wrapping_sub(self.cq.local_head());
        if in_flight > self.region.layout().cq_entries && self.sq.consumer_needs_wakeup() {
            ring_doorbell(self.sq_doorbell.as_fd()).map_err(WaitError::Io)?;
        }
        Ok(())
    }

    /// Fails with `EngineUnavailable` once the engine will complete nothing more.
    fn check_alive(&self) -> Result<(), WaitError> {
        let state = self.state();
        if state.is_terminal() {
            // Completions posted before the terminal state are still in the CQ; the caller
            // reaps them first (try_cqe runs before this in every loop).
            if self.cq.cached_ready() == 0 {
                return Err(WaitError::EngineUnavailable {
                    state,
                    reason: self.close_reason(),
                });
            }
        }
        Ok(())
    }

    fn sleep(&mut self, timeout: Option<Duration>) -> Result<(), WaitError> {
        let ms = timeout.map_or(PollTimeout::NONE, |t| {
            PollTimeout::try_from(t.as_millis().max(1).min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
        });
        let mut fds = [
            PollFd::new(self.cq_doorbell.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.ctl.as_fd(), PollFlags::POLLIN),
        ];
        match nix::poll::poll(&mut fds, ms) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(WaitError::Io(e.into())),
        }
        let ctl_ready = fds[1].revents().is_some_and(|r| !r.is_empty());
        drain_doorbell(self.cq_doorbell.as_fd()).map_err(WaitError::Io)?;
        if ctl_ready {
            // Only Pong is expected unsolicited; EOF means the engine is gone.
            match control_io::recv(self.ctl.as_fd()) {
                Ok(_) => {}
                Err(_) if self.try_cqe_pending() => {}
                Err(_) => {
                    return Err(WaitError::EngineUnavailable {
                        state: self.state(),
                        reason: self.close_reason(),
                    })
                }
            }
        }
        Ok(())
    }

    fn try_cqe_pending(&mut self) -> bool {
        self.cq.refresh() > 0
    }

    /// Sends a keepalive over the control socket (the lease also counts submissions and the
    /// keepalive thread's heartbeats, so this is rarely needed).
    pub fn ping(&self) -> Result<(), WaitError> {
        control_io::send(self.ctl.as_fd(), &Message::Ping, &[]).map_err(WaitError::Io)
    }

    /// Registers a peer engine (its UCX listener, `ip:port`) with this engine and returns
    /// the handle to put in `SEND` entries' `peer` field. Slow path (control socket).
    pub fn connect_peer(&mut self, addr: &str) -> Result<u32, ConnectError> {
        control_io::send(self.ctl.as_fd(), &Message::ConnectPeer { addr: addr.into() }, &[])
            .map_err(ConnectError::Io)?;
        loop {
            match control_io::recv(self.ctl.as_fd()) {
                Ok((Message::PeerConnected { peer }, _)) => return Ok(peer),
                Ok((Message::Error { code, message }, _)) => {
                    return Err(ConnectError::Rejected {
                        code: ControlErrorCode::from_u32(code),
                        message,
                    })
                }
                Ok(_) => continue, // a Pong to an earlier ping
                Err(RecvError::Eof) => {
                    return Err(ConnectError::Protocol("engine closed the control connection".into()))
                }
                Err(e) => return Err(ConnectError::Protocol(e.to_string())),
            }
        }
    }

    /// Asks the engine to finish everything accepted and end the session.
    /// Completions still in the CQ are returned.
    pub fn close(mut self) -> Result<Vec<Cqe>, CloseError> {
        control_io::send(self.ctl.as_fd(), &Message::Close, &[]).map_err(CloseError::Io)?;
        loop {
            match control_io::recv(self.ctl.as_fd()) {
                Ok((Message::Closed, _)) => break,
                Ok(_) => continue,
                Err(RecvError::Eof) => return Err(CloseError::EngineGone),
                Err(e) => return Err(CloseError::Protocol(e.to_string())),
            }
        }
        let mut left = Vec::new();
        while let Ok(Some(c)) = self.try_cqe() {
            left.push(c);
        }
        Ok(left)
    }

    /// The session's buffer area (requests address it by offset).
    pub fn buffer(&self) -> BufferArea<'_> {
        BufferArea { region: &self.region }
    }

    /// Raw access to the whole region, for tests that play a hostile client.
    ///
    /// # Safety
    /// The caller may corrupt its own session; the engine must survive it, this process may not.
    pub unsafe fn region_raw(&self) -> (*mut u8, usize) {
        let whole = self.region.whole();
        let all = whole.range(0, whole.len()).expect("the whole area lies inside itself");
        (all.as_ptr(), all.len())
    }

    /// Published SQ entries the engine has not consumed yet, as the engine last reported.
    pub fn sq_pending(&mut self) -> u32 {
        match self.sq.refresh() {
            Ok(free) => self.region.layout().sq_entries - free,
            Err(_) => 0,
        }
    }

    /// Whether the engine's worker announced it is asleep (SQ NEED_WAKEUP).
    pub fn engine_sleeping(&self) -> bool {
        self.sq.ring().ctl().flags.load(Ordering::Relaxed) & ring_proto::layout::RING_NEED_WAKEUP != 0
    }

    /// Entries the engine rejected as invalid, as it counts them in the SQ control block.
    pub fn sq_invalid_count(&self) -> u32 {
        self.sq.ring().ctl().invalid.load(Ordering::Relaxed)
    }

    fn wake_engine(&self) -> Result<(), SubmitError> {
        ring_doorbell(self.sq_doorbell.as_fd()).map_err(SubmitError::Io)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(k) = self.keepalive.take() {
            k.stop();
        }
    }
}

/// Batching view of the submission queue (reserve, then publish on `sync` or drop).
pub struct SubmissionQueue<'a> {
    session: &'a mut Session,
    pushed: u32,
}

impl SubmissionQueue<'_> {
    /// Writes an entry into the next free slot; not visible to the engine until `sync`.
    pub fn push(&mut self, sqe: &Sqe) -> Result<(), SubmitError> {
        if self.session.state().is_terminal() {
            return Err(SubmitError::EngineUnavailable);
        }
        self.session.sq.push(sqe).map_err(|_| SubmitError::Full)?;
        self.pushed += 1;
        Ok(())
    }

    /// Free slots right now.
    pub fn free(&mut self) -> u32 {
        self.session.sq.refresh().unwrap_or(0)
    }

    /// Publishes the pushed entries; wakes the engine if it announced it sleeps.
    pub fn sync(&mut self) -> Result<(), SubmitError> {
        if self.pushed == 0 {
            return Ok(());
        }
        self.pushed = 0;
        if self.session.sq.publish() {
            self.session.wake_engine()?;
        }
        Ok(())
    }
}

impl Drop for SubmissionQueue<'_> {
    fn drop(&mut self) {
        let _ = self.sync();
    }
}

/// Iterator over ready completions; consumed slots go back to the engine on drop.
pub struct CompletionQueue<'a> {
    session: &'a mut Session,
}

impl Iterator for CompletionQueue<'_> {
    type Item = Cqe;
    fn next(&mut self) -> Option<Cqe> {
        self.session.cq.pop()
    }
}

impl Drop for CompletionQueue<'_> {
    fn drop(&mut self) {
        let _ = self.session.release_cq();
    }
}

/// The session's buffer area. Copies in and out are bounds-checked; the engine writes here
/// only for requests the caller submitted, so read a range after its completion arrived.
pub struct BufferArea<'a> {
    region: &'a Region,
}

impl BufferArea<'_> {
    pub fn len(&self) -> usize {
        self.region.layout().buf_size
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies `out.len()` bytes at `offset` out of the buffer area; `None` if the range is
    /// not inside it. The engine may be writing ranges of requests still in flight: each byte
    /// is read once, and only the copy is used.
    pub fn read(&self, offset: usize, out: &mut [u8]) -> Option<()> {
        self.region.buf().copy_out(offset, out).ok()
    }

    /// Copies `data` into the buffer area at `offset`; `None` if the range is not inside it.
    pub fn write(&self, offset: usize, data: &[u8]) -> Option<()> {
        self.region.buf().copy_in(offset, data).ok()
    }
}

/// Background thread that bumps the header's client heartbeat so an idle session keeps its
/// lease (a plain store into shared memory; no system call).
struct Keepalive {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Keepalive {
    fn start(region: Arc<Region>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let period = Duration::from_millis((region.header().lease_ms as u64 / 4).max(10));
        let thread = std::thread::Builder::new()
            .name("ring-keepalive".into())
            .spawn(move || {
                let mut beat = 0u64;
                while !s.load(Ordering::Relaxed) {
                    beat += 1;
                    region.header().client_heartbeat.store(beat, Ordering::Relaxed);
                    std::thread::park_timeout(period);
                }
            })
            .expect("spawn keepalive thread");
        Self { stop, thread }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.thread().unpark();
        let _ = self.thread.join();
    }
}
