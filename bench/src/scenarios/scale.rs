//! Scaling: NOP throughput and latency with many sessions per worker
//! (`scale.nop.sessions.N`) and with several workers (`scale.nop.workers.N`).
//!
//! One client thread (the measuring thread, on the client core) drives every session round
//! robin with one NOP in flight per session: it submits a NOP on each, then polls the
//! sessions' CQs in turn; each completion is one sample (its submit to the poll that saw it,
//! so queueing behind the other sessions is in it) and that session's next NOP goes out at
//! once ([`pipelined_loop`]). ops/s is completions per second of all sessions together.

use std::path::Path;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ring_client::{Session, SessionOptions};
use serde_json::{Map, Value};

use super::ring::{check, nop, stall_context};
use super::{pipelined_loop, BlockRun, Ctx, Pipeline, Scenario};
use crate::engine::{Engine, EngineOptions};
use crate::Result;

/// Sessions per worker in `scale.nop.workers.N`.
pub const SESSIONS_PER_WORKER: usize = 4;

/// The scaling sessions' rings and buffer: small, so that 64 of them fit in a few huge pages
/// (a NOP touches neither the buffer nor more than a few ring entries).
fn session_options() -> SessionOptions {
    SessionOptions {
        sq_entries: 64,
        cq_entries: 128,
        buf_size: 4096,
        keepalive: false,
    }
}

fn open_sessions(socket: &Path, n: usize) -> Result<Vec<Session>> {
    (0..n)
        .map(|i| {
            Session::connect(socket, session_options())
                .map_err(|e| format!("opening scaling session {} of {n} on {}: {e}", i + 1, socket.display()).into())
        })
        .collect()
}

/// One NOP in flight per session; a slot is a session.
struct NopPipeline<'a> {
    sessions: &'a mut [Session],
    /// The user_data of each session's NOP in flight (0: none).
    expected: Vec<u64>,
    seq: &'a mut u64,
}

impl Pipeline for NopPipeline<'_> {
    fn start(&mut self, slot: usize) -> Result<bool> {
        *self.seq += 1;
        let want = *self.seq;
        self.sessions[slot].submit(&nop(want))?;
        self.expected[slot] = want;
        Ok(false)
    }

    fn poll(&mut self, done: &mut dyn FnMut(usize)) -> Result<()> {
        for (slot, s) in self.sessions.iter_mut().enumerate() {
            let want = self.expected[slot];
            if want == 0 {
                continue;
            }
            if let Some(c) = s.try_cqe()? {
                check(&c, want)?;
                self.expected[slot] = 0;
                done(slot);
            }
        }
        Ok(())
    }

    fn waiting_for(&self) -> String {
        let waiting: Vec<String> = self
            .sessions
            .iter()
            .zip(&self.expected)
            .filter(|(_, w)| **w != 0)
            .take(4)
            .map(|(s, w)| format!("NOP {w} on session {} ({})", s.session_id(), stall_context(s)))
            .collect();
        format!(
            "completions of {} sessions, e.g. {}",
            self.sessions.len(),
            waiting.join("; ")
        )
    }
}

fn drive(sessions: &mut [Session], seq: &mut u64, ctx: &Ctx, hist: &mut Histogram<u64>) -> Result<BlockRun> {
    let depth = sessions.len();
    let mut p = NopPipeline {
        expected: vec![0; depth],
        sessions,
        seq,
    };
    pipelined_loop(ctx.timing, hist, depth, &mut p)
}

/// `scale.nop.sessions.N`: N sessions on the run's engine (one worker). The sessions are
/// opened at the start of each block and closed at its end (`Session::close` returns once the
/// worker let go of the session), so that no block's worker polls another block's sessions.
pub struct Sessions {
    n: usize,
    seq: u64,
    open_ms: Vec<f64>,
    workers: Vec<u32>,
}

impl Sessions {
    pub fn new(n: usize) -> Self {
        Self {
            n,
            seq: 0,
            open_ms: Vec::new(),
            workers: Vec::new(),
        }
    }
}

impl Scenario for Sessions {
    fn run_block(&mut self, ctx: &mut Ctx, hist: &mut Histogram<u64>) -> Result<BlockRun> {
        let socket = ctx
            .socket
            .clone()
            .ok_or("this scenario needs the engine, and none was started")?;
        let t = Instant::now();
        let mut sessions = open_sessions(&socket, self.n)?;
        self.open_ms.push(t.elapsed().as_secs_f64() * 1e3);
        self.workers = sessions.iter().map(Session::worker).collect();
        let run = drive(&mut sessions, &mut self.seq, ctx, hist);
        // Every NOP is back (the loop drains), so closing returns nothing left over.
        let mut closed = Ok(());
        for s in sessions {
            if let Err(e) = s.close() {
                closed = Err(format!("closing a scaling session: {e}"));
            }
        }
        let run = run?;
        closed?;
        Ok(run)
    }

    fn details(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("sessions".into(), self.n.into());
        m.insert("in_flight_per_session".into(), 1.into());
        m.insert("workers".into(), 1.into());
        m.insert(
            "session_workers".into(),
            distinct(&self.workers).into_iter().collect::<Vec<_>>().into(),
        );
        m.insert("client_threads".into(), 1.into());
        let mut sorted = self.open_ms.clone();
        sorted.sort_by(f64::total_cmp);
        if let Some(mid) = sorted.get(sorted.len() / 2) {
            m.insert("open_sessions_ms_median".into(), (crate::stats::round2(*mid)).into());
        }
        m.insert(
            "session_sizes".into(),
            "sq 64, cq 128, buffer 4096 B; opened at each block's start, closed at its end".into(),
        );
        m
    }
}

fn distinct(v: &[u32]) -> Vec<u32> {
    let mut d = v.to_vec();
    d.sort_unstable();
    d.dedup();
    d
}

/// `scale.nop.workers.N`: an engine of its own with N workers (`--cores` the first N of
/// [`Ctx::worker_cores`]) and [`SESSIONS_PER_WORKER`] sessions per worker, driven by the one
/// client thread. The engine starts at the scenario's first block and stops after its group;
/// after each block the scenario waits until every worker sleeps, so that the group's other
/// blocks have the cores to themselves.
pub struct Workers {
    n: usize,
    seq: u64,
    /// Sessions first (dropped before the engine stops).
    sessions: Vec<Session>,
    engine: Option<Engine>,
    cores: Vec<usize>,
    per_worker: Vec<usize>,
}

impl Workers {
    pub fn new(n: usize) -> Self {
        Self {
            n,
            seq: 0,
            sessions: Vec::new(),
            engine: None,
            cores: Vec::new(),
            per_worker: Vec::new(),
        }
    }

    fn start(&mut self, ctx: &Ctx) -> Result<()> {
        let mut opts: EngineOptions = ctx
            .engine_template
            .clone()
            .ok_or("this scenario starts an engine, and no engine binary was found")?;
        if ctx.worker_cores.len() < self.n {
            return Err(format!(
                "{} workers need {} cores besides the client core; there are {:?}",
                self.n, self.n, ctx.worker_cores
            )
            .into());
        }
        self.cores = ctx.worker_cores[..self.n].to_vec();
        opts.cores = self.cores.clone();
        opts.log_path = ctx
            .out
            .as_ref()
            .map(|d| d.join(format!("engine-workers-{}.log", self.n)));
        let (engine, first) = Engine::start(&opts)?;
        let socket = engine.socket.clone();
        self.engine = Some(engine);
        // The engine places each new session on its least-loaded worker: N x k sessions
        // opened one after the other give every worker k.
        self.sessions.push(first);
        self.sessions
            .extend(open_sessions(&socket, self.n * SESSIONS_PER_WORKER - 1)?);
        let mut per_worker = vec![0usize; self.n];
        for s in &self.sessions {
            let w = s.worker() as usize;
            if w >= self.n {
                return Err(format!(
                    "session {} is on worker {w}; the engine has {} workers",
                    s.session_id(),
                    self.n
                )
                .into());
            }
            per_worker[w] += 1;
        }
        self.per_worker = per_worker;
        Ok(())
    }

    /// Waits until every worker announced NEED_WAKEUP on one of its sessions (each worker
    /// has sessions), then the half millisecond it takes to reach `epoll_wait`.
    fn wait_asleep(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        for s in &self.sessions {
            while !s.engine_sleeping() {
                if Instant::now() >= deadline {
                    return Err(format!(
                        "the workers of the scale.nop.workers.{} engine did not go to sleep within {timeout:?}",
                        self.n
                    )
                    .into());
                }
                crate::interrupt::check()?;
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        std::thread::sleep(Duration::from_micros(500));
        Ok(())
    }
}

impl Scenario for Workers {
    fn run_block(&mut self, ctx: &mut Ctx, hist: &mut Histogram<u64>) -> Result<BlockRun> {
        if self.engine.is_none() {
            self.start(ctx)?;
        }
        let run = drive(&mut self.sessions, &mut self.seq, ctx, hist)?;
        self.wait_asleep(ctx.settle)?;
        Ok(run)
    }

    fn details(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("workers".into(), self.n.into());
        m.insert("worker_cores".into(), self.cores.clone().into());
        m.insert("sessions".into(), self.sessions.len().into());
        m.insert("sessions_per_worker".into(), self.per_worker.clone().into());
        m.insert("in_flight_per_session".into(), 1.into());
        m.insert("client_threads".into(), 1.into());
        m
    }

    fn engine_command(&self) -> Option<String> {
        self.engine.as_ref().map(|e| e.command_line().to_owned())
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.sessions.clear();
        if let Some(e) = self.engine.take() {
            let _ = crate::engines::stop_engine(e);
        }
    }
}
