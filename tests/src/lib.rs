//! Harness for cross-process tests: starts the real engine binary on a private socket,
//! waits until it serves, and stops or kills it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use ring_client::{Session, SessionOptions};

pub mod hugepages;
pub mod rng;
pub mod spec_client;
pub mod spec_exports;

/// Engine flags for a UCX listener on loopback tcp (port chosen by the engine:
/// [`Engine::ucx_listen_addr`]).
pub const UCX_LOOPBACK_TCP: [&str; 6] = [
    "--ucx-listen",
    "127.0.0.1:0",
    "--ucx-transports",
    "tcp",
    "--ucx-net-devices",
    "lo",
];

/// A NOP entry carrying `user_data`.
/// A SEND to the peer's ECHO service: `len` bytes at `off`, the answer into `resp_cap`
/// bytes at `resp_off`.
pub fn echo_send(
    peer: u32,
    user_data: u64,
    off: usize,
    len: usize,
    resp_off: usize,
    resp_cap: usize,
) -> ring_proto::Sqe {
    ring_proto::Sqe {
        opcode: ring_proto::opcode::SEND,
        peer,
        aux: ring_proto::entry::service::ECHO,
        user_data,
        buf_offset: off as u64,
        buf_len: len as u32,
        args: [resp_off as u64, resp_cap as u64, 0, 0],
        ..Default::default()
    }
}

/// Exports `len` bytes at `off` of `s` with permissions `perms` (1 read, 2 write, 3 both),
/// the ticket going to the last 16 bytes of the buffer area (keep the export clear of them);
/// returns the ticket's (id, key), panicking if the export fails.
pub fn export(s: &mut Session, off: usize, len: usize, perms: u32) -> (u64, u64) {
    let ticket_off = s.layout().buf_size - ring_proto::entry::EXPORT_TICKET_LEN;
    s.submit(&ring_proto::Sqe {
        opcode: ring_proto::opcode::EXPORT,
        user_data: 77,
        buf_offset: off as u64,
        buf_len: len as u32,
        aux: perms,
        args: [ticket_off as u64, 0, 0, 0],
        ..Default::default()
    })
    .unwrap();
    let c = wait(s);
    assert_eq!((c.user_data, c.result, c.flags), (77, 0, 0), "export failed: {c:?}");
    let mut t = [0u8; ring_proto::entry::EXPORT_TICKET_LEN];
    s.buffer().read(ticket_off, &mut t).unwrap();
    let t = ring_proto::entry::ExportTicket::decode(&t);
    assert_ne!(t.id, 0, "export ids are never 0");
    (t.id, t.key)
}

/// A READ (or WRITE) of `len` bytes at offset `remote_off` of export `(id, key)` at `peer`,
/// into (from) `local_off`.
pub fn rma_sqe(
    write: bool,
    peer: u32,
    (id, key): (u64, u64),
    remote_off: u64,
    local_off: usize,
    len: usize,
    user_data: u64,
) -> ring_proto::Sqe {
    ring_proto::Sqe {
        opcode: if write {
            ring_proto::opcode::WRITE
        } else {
            ring_proto::opcode::READ
        },
        peer,
        user_data,
        buf_offset: local_off as u64,
        buf_len: len as u32,
        args: [id, key, remote_off, 0],
        ..Default::default()
    }
}

pub fn nop(user_data: u64) -> ring_proto::Sqe {
    ring_proto::Sqe {
        opcode: ring_proto::opcode::NOP,
        user_data,
        ..Default::default()
    }
}

/// The next completion of `s` (spinning briefly, then sleeping; panics after [`PATIENCE`]).
pub fn wait(s: &mut Session) -> ring_proto::Cqe {
    s.wait_cqe(Duration::from_micros(50), Some(PATIENCE))
        .expect("completion")
}

/// Upper bound for anything a test waits for. Generous: it only turns a hang into a failure,
/// it is never what a test measures.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A built binary of this workspace: `$name` from the env var `env` if set, else next to the
/// test executable's profile directory (`target/<profile>/`).
pub fn workspace_binary(name: &str, env: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not built: run `cargo build --workspace` first (or set {env})",
        p.display()
    );
    p
}

pub fn engine_binary() -> PathBuf {
    workspace_binary("engine", "SWRING_ENGINE")
}

/// The core the engine worker is pinned to in tests: the last allowed CPU.
pub fn engine_core() -> usize {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).expect("affinity");
    (0..nix::sched::CpuSet::count())
        .rev()
        .find(|&c| set.is_set(c).unwrap_or(false))
        .unwrap_or(0)
}

pub struct Engine {
    child: Option<Child>,
    pub socket: PathBuf,
    pub dir: tempfile::TempDir,
    log_path: PathBuf,
}

impl Engine {
    /// Starts the engine with test defaults (private socket, pinned worker, short idle spin,
    /// normal pages) plus `args`, which may override any of them.
    pub fn start(args: &[&str]) -> Engine {
        Self::start_with_env(args, &[])
    }

    /// [`Engine::start`] with environment changes: `(name, Some(value))` sets a variable,
    /// `(name, None)` removes it (RUST_LOG=info is set by default).
    pub fn start_with_env(args: &[&str], env: &[(&str, Option<&str>)]) -> Engine {
        let mut e = Self::spawn(args, env);
        e.wait_ready();
        e
    }

    /// Starts the engine and waits for its "engine ready" log line only: for engines that
    /// refuse this test's own connections.
    pub fn start_unready(args: &[&str]) -> Engine {
        let e = Self::spawn(args, &[]);
        e.wait_for_log("engine ready");
        e
    }

    fn spawn(args: &[&str], env: &[(&str, Option<&str>)]) -> Engine {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("engine.sock");
        let log_path = dir.path().join("engine.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let core = engine_core().to_string();
        let mut cmd = Command::new(engine_binary());
        cmd.arg("--socket").arg(&socket);
        for (flag, default) in [
            ("--cores", core.as_str()),
            ("--idle-spin-us", "1000"),
            ("--hugepages", "off"),
        ] {
            if !args.contains(&flag) {
                cmd.args([flag, default]);
            }
        }
        cmd.args(args).env(
            "RUST_LOG",
            std::env::var("SWRING_TEST_LOG").unwrap_or_else(|_| "info".into()),
        );
        for (k, v) in env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        let child = cmd.spawn().expect("spawn engine");
        Engine {
            child: Some(child),
            socket,
            dir,
            log_path,
        }
    }

    /// Starts the engine expecting it to refuse; returns its exit status and log.
    pub fn start_failing(args: &[&str]) -> (ExitStatus, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new(engine_binary())
            .arg("--socket")
            .arg(dir.path().join("engine.sock"))
            .args(["--cores", &engine_core().to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run engine");
        (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// Like [`Engine::start`], but an engine that exits during start-up is returned as its
    /// exit status and log instead of a panic.
    pub fn try_start(args: &[&str]) -> Result<Engine, (ExitStatus, String)> {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("engine.sock");
        let log_path = dir.path().join("engine.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut cmd = Command::new(engine_binary());
        cmd.arg("--socket")
            .arg(&socket)
            .args(["--cores", &engine_core().to_string(), "--hugepages", "off"]);
        cmd.args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let mut child = cmd.spawn().expect("spawn engine");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return Err((status, std::fs::read_to_string(&log_path).unwrap_or_default()));
            }
            if socket.exists() && Session::connect(&socket, SessionOptions::default()).is_ok() {
                return Ok(Engine {
                    child: Some(child),
                    socket,
                    dir,
                    log_path,
                });
            }
            assert!(Instant::now() < deadline, "engine did not start serving");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().expect("try_wait") {
                panic!("engine exited during start-up ({status}):\n{}", self.log());
            }
            if self.socket.exists() {
                if let Ok(s) = self.try_connect(SessionOptions::default()) {
                    drop(s);
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "engine did not start serving:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    pub fn try_connect(&self, opts: SessionOptions) -> Result<Session, ring_client::ConnectError> {
        Session::connect(&self.socket, opts)
    }

    pub fn connect(&self) -> Session {
        self.try_connect(SessionOptions::default())
            .unwrap_or_else(|e| panic!("connect: {e}\n{}", self.log()))
    }

    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Waits until the engine log contains `needle` (or panics with the log).
    pub fn wait_for_log(&self, needle: &str) {
        wait_until(
            &format!("engine log line {needle:?}"),
            || self.log().contains(needle),
            || self.log(),
        );
    }

    /// The address the engine's UCX listener bound (it logs "UCX listening address=IP:PORT";
    /// tests start it on port 0).
    pub fn ucx_listen_addr(&self) -> String {
        self.wait_for_log("UCX listening");
        let log = self.log();
        let line = log.lines().find(|l| l.contains("UCX listening")).unwrap();
        let addr = line.split("address=").nth(1).expect("address field");
        addr.split_whitespace().next().unwrap().to_string()
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).expect("signal engine");
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> (ExitStatus, String) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let status = wait_child(self.child.as_mut().unwrap());
        self.child = None;
        (status, self.log())
    }

    /// Waits for an exit already under way (after a signal sent with [`Engine::signal`]).
    pub fn wait_exit(mut self) -> (ExitStatus, String) {
        let status = wait_child(self.child.as_mut().unwrap());
        self.child = None;
        (status, self.log())
    }

    /// SIGKILL, no goodbye.
    pub fn kill(mut self) -> String {
        let mut c = self.child.take().unwrap();
        let _ = c.kill();
        let _ = c.wait();
        self.log()
    }

    /// Waits until exactly `n` sessions are open, by the engine's own log lines (reclaiming
    /// a closed session is asynchronous).
    pub fn wait_live_sessions(&self, n: usize) {
        let live = || {
            let log = self.log();
            log.matches("session opened").count() - log.matches("session closed").count()
        };
        wait_until(
            &format!("{n} live sessions"),
            || live() == n,
            || format!("live: {}\n{}", live(), self.log()),
        );
    }

    /// Open file descriptors of the engine process.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("/proc fd")
            .count()
    }

    /// `engine status --json` of this engine, parsed.
    pub fn status_json(&self) -> serde_json::Value {
        let out = Command::new(engine_binary())
            .args(["status", "--json", "--socket"])
            .arg(&self.socket)
            .output()
            .expect("run engine status");
        assert!(
            out.status.success(),
            "engine status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("engine status --json")
    }

    /// Resident memory of the engine process in KiB (VmRSS in /proc/PID/status).
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("/proc status")
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// Mappings of the engine process.
    pub fn map_count(&self) -> usize {
        std::fs::read_to_string(format!("/proc/{}/maps", self.pid()))
            .expect("/proc maps")
            .lines()
            .count()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn wait_child(c: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(s) = c.try_wait().expect("try_wait") {
            return s;
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            panic!("process {} did not exit in time", c.id());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `cond` until it holds; panics with `what` and `context()` after [`PATIENCE`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool, context: impl Fn() -> String) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}\n{}", context());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sets its flag when dropped, also while its thread unwinds from a panic. A test whose
/// scoped helper thread loops until a flag is set holds one in every other thread of the
/// scope: when that thread's assertion fails, the helper stops and the test fails, where it
/// would otherwise hang in [`std::thread::scope`] waiting for the helper.
pub struct StopOnDrop<'a>(pub &'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn a_panicking_thread_stops_the_looping_helper_of_its_scope() {
        let stop = AtomicBool::new(false);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::yield_now();
                    }
                });
                scope.spawn(|| {
                    let _stop = super::StopOnDrop(&stop);
                    panic!("an assertion of the test failed");
                });
            })
        }));
        assert!(r.is_err(), "the scope returns, propagating the panic");
    }
}

/// One UCX lane of a peer connection, as the engine logs it ("peer connection transports").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lane {
    /// The transport ("tcp", "sysv", "posix", "cma", ...; "cm" for the connection manager).
    pub transport: String,
    /// The lane's whole description (what it carries: "am", "rma_bw#0", "keepalive", ...).
    pub text: String,
}

/// The lanes of the first peer connection an engine logged, from its line
/// "peer connection transports ... lanes=lane[0]: cm tcp | lane[1]: 1:sysv/memory.0 md[1] ->
/// ... am keepalive | lane[3]: 3:cma/memory.0 ... rma_bw#0" (empty when none was logged).
pub fn peer_lanes(log: &str) -> Vec<Lane> {
    let Some(line) = log.lines().find(|l| l.contains("peer connection transports")) else {
        return Vec::new();
    };
    let Some((_, lanes)) = line.split_once("lanes=") else {
        return Vec::new();
    };
    lanes
        .split(" | ")
        .filter_map(|lane| {
            let (_, rest) = lane.split_once("]: ")?;
            let first = rest.split_whitespace().next()?;
            // "1:sysv/memory.0" or "cm" (the connection manager lane: "cm tcp").
            let transport = match first.split_once(':') {
                Some((_, t)) => t.split('/').next()?.to_string(),
                None => first.to_string(),
            };
            Some(Lane {
                transport,
                text: lane.trim().to_string(),
            })
        })
        .collect()
}

/// Transports that move bytes through shared memory on one host.
pub const SHARED_MEMORY_TRANSPORTS: &[&str] = &["sysv", "posix", "cma", "xpmem", "knem"];

/// Asserts that a peer connection's active messages and one-sided (rma) operations both go
/// over shared-memory transports, not tcp.
pub fn assert_shared_memory_lanes(lanes: &[Lane]) {
    let over_sm = |what: &str| {
        let carrying: Vec<&Lane> = lanes
            .iter()
            .filter(|l| l.text.split_whitespace().any(|w| w.starts_with(what)))
            .collect();
        assert!(!carrying.is_empty(), "no lane carries {what}: {lanes:?}");
        assert!(
            carrying
                .iter()
                .all(|l| SHARED_MEMORY_TRANSPORTS.contains(&l.transport.as_str())),
            "{what} goes over {carrying:?}, not shared memory"
        );
    };
    over_sm("am");
    over_sm("rma");
}

#[cfg(test)]
mod lane_tests {
    #[test]
    fn lanes_are_read_from_the_engines_log_line() {
        let log = "2026-12-07T09:00:00Z  INFO engine::dataplane: peer connection transports peer=1 address=127.0.0.1:1 lanes=lane[0]: cm tcp | lane[1]: 1:sysv/memory.0 md[1] -> md[1]/sysv/sysdev[255] seg 4294967295 am keepalive | lane[2]: 2:posix/memory.0 md[2] -> md[2]/posix/sysdev[255] seg 4294967295 | lane[3]: 3:cma/memory.0 md[3] -> md[3]/cma/sysdev[255] seg 4294967295 rma_bw#0\n";
        let lanes = super::peer_lanes(log);
        let t: Vec<&str> = lanes.iter().map(|l| l.transport.as_str()).collect();
        assert_eq!(t, ["cm", "sysv", "posix", "cma"]);
        super::assert_shared_memory_lanes(&lanes);
        let tcp = "peer connection transports lanes=lane[0]: cm tcp | lane[1]: 0:tcp/lo.0 md[0] -> md[0]/tcp/sysdev[255] am am_bw#0 rma_bw#0 keepalive";
        let lanes = super::peer_lanes(tcp);
        assert_eq!(lanes[1].transport, "tcp");
        assert!(std::panic::catch_unwind(|| super::assert_shared_memory_lanes(&lanes)).is_err());
    }
}
