//! `iceoryx2.reqres`: a request-response round trip with the `iceoryx2` crate (the best-known
//! shared-memory IPC library) between two processes on the bench's two cores: the bench (the
//! client, on the measuring thread) and a child of itself (`bench --iceoryx2-server CORE
//! --iceoryx2-service NAME`, hidden) pinned to the engine core.
//!
//! Both sides busy-poll, as the ring engine's worker does while it has work: the client sends
//! a request (zero-copy loan, `u64` sequence number) and spins on its `PendingResponse`; the
//! server spins on `Server::receive`, answers each request with its number (zero-copy loan)
//! and drops it. Between its blocks the server must not spin on the engine core: a block
//! starts with one byte on the server's stdin (it blocks in `read` until then) and ends with
//! a request carrying [`PAUSE`], after whose answer the server goes back to `read`. Closing
//! its stdin ends it, dropping its iceoryx2 resources.
//!
//! Each run is an iceoryx2 domain of its own ([`Domain`]): a file prefix unique to the bench
//! process for its shared memory under /dev/shm, and a private root directory instead of
//! /tmp/iceoryx2. Concurrent runs do not meet, and at the end the bench removes what iceoryx2
//! keeps on purpose (its per-domain management segment), so a run leaves no file behind.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use iceoryx2::port::client::Client;
use iceoryx2::port::server::Server;
use iceoryx2::prelude::*;
use serde_json::{Map, Value};

use super::{sample_loop, BlockRun, Ctx, Scenario, SpinGuard, STALL_LIMIT};
use crate::Result;

/// The iceoryx2 version in bench/Cargo.toml (reported in `details`).
pub const ICEORYX2_VERSION: &str = "0.10";

/// The request that ends a block: the server answers it, then blocks on its stdin.
pub const PAUSE: u64 = u64::MAX;

/// The byte on the server's stdin that starts a block.
const GO: u8 = b'g';

type Svc = ipc::Service;

static TERMINATED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_terminate(_: libc::c_int) {
    TERMINATED.store(true, Ordering::Relaxed);
}

/// The service both processes use (within the run's own domain).
const SERVICE: &str = "seaweed-ring-bench/reqres";

/// The iceoryx2 domain of one run: `id` is the file prefix of its shared memory
/// (`/dev/shm/<id>...`) and names its root directory (`<temp dir>/<id>`).
#[derive(Debug, Clone)]
pub struct Domain {
    pub id: String,
}

impl Domain {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Self {
            id: format!("swbench_{:x}_{nanos:x}_", std::process::id()),
        }
    }

    fn root(&self) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("{}iceoryx2", self.id))
    }

    fn config(&self) -> Result<Config> {
        let mut config = Config::default();
        let root = self.root();
        let path = Path::new(root.as_os_str().as_encoded_bytes())
            .map_err(|e| format!("iceoryx2 root path {}: {e:?}", root.display()))?;
        config.global.set_root_path(&path);
        config.global.prefix =
            FileName::new(self.id.as_bytes()).map_err(|e| format!("iceoryx2 prefix {}: {e:?}", self.id))?;
        Ok(config)
    }

    /// Removes what the domain left: its files under /dev/shm and its root directory. Only
    /// once no process of the domain runs any more.
    fn remove(&self) {
        if let Ok(dir) = std::fs::read_dir("/dev/shm") {
            for e in dir.flatten() {
                if e.file_name().as_encoded_bytes().starts_with(self.id.as_bytes()) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let _ = std::fs::remove_dir_all(self.root());
    }
}

fn node(domain: &Domain) -> Result<Node<Svc>> {
    // Errors only: iceoryx2's console logger would otherwise report on the terminal.
    set_log_level(LogLevel::Error);
    NodeBuilder::new()
        .config(&domain.config()?)
        // The bench has its own SIGINT handling (Ctrl-C ends the block), and so has the server.
        .signal_handling_mode(SignalHandlingMode::Disabled)
        .create::<Svc>()
        .map_err(|e| format!("iceoryx2 node: {e:?}").into())
}

fn service_name() -> Result<ServiceName> {
    SERVICE
        .try_into()
        .map_err(|e| format!("iceoryx2 service name {SERVICE:?}: {e:?}").into())
}

/// The server (`bench --iceoryx2-server CORE --iceoryx2-domain ID`): pins itself to CORE,
/// creates the service and its server port in domain ID, says `ready` on `out`, then serves
/// blocks as the module documentation says until its stdin closes (or SIGTERM).
pub fn serve(core: usize, domain: &str, mut out: impl Write) -> Result<()> {
    crate::machine::pin_current_thread(core)?;
    // SAFETY: installing a handler that only stores to an atomic; no SA_RESTART, so a
    // blocked read returns EINTR and the loop below ends cleanly (dropping the iceoryx2
    // resources) on SIGTERM, e.g. the parent-death signal.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_terminate as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut()) != 0 {
            return Err(format!("sigaction: {}", std::io::Error::last_os_error()).into());
        }
    }
    let node = node(&Domain { id: domain.to_owned() })?;
    let service = node
        .service_builder(&service_name()?)
        .request_response::<u64, u64>()
        .create()
        .map_err(|e| format!("iceoryx2 service {SERVICE}: {e:?}"))?;
    let server: Server<Svc, u64, (), u64, ()> = service
        .server_builder()
        .create()
        .map_err(|e| format!("iceoryx2 server port: {e:?}"))?;
    writeln!(out, "ready").and_then(|()| out.flush())?;
    let mut stdin = std::io::stdin().lock();
    let mut byte = [0u8];
    loop {
        match stdin.read(&mut byte) {
            Ok(0) => return Ok(()),
            Ok(_) if byte[0] == GO => {}
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                if TERMINATED.load(Ordering::Relaxed) {
                    return Ok(());
                }
                continue;
            }
            Err(e) => return Err(format!("reading the control pipe: {e}").into()),
        }
        let mut idle = 0u32;
        loop {
            match server.receive().map_err(|e| format!("iceoryx2 receive: {e:?}"))? {
                Some(request) => {
                    let id = *request;
                    let response = request
                        .loan_uninit()
                        .map_err(|e| format!("iceoryx2 response loan: {e:?}"))?;
                    response
                        .write_payload(id)
                        .send()
                        .map_err(|e| format!("iceoryx2 response send: {e:?}"))?;
                    if id == PAUSE {
                        break;
                    }
                }
                None => {
                    idle = idle.wrapping_add(1);
                    if idle & 0xffff == 0 && TERMINATED.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    std::hint::spin_loop();
                }
            }
        }
    }
}

struct ServerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl ServerProcess {
    fn start(core: usize, domain: &Domain) -> Result<(Self, String)> {
        let exe = std::env::current_exe().map_err(|e| format!("the bench's own executable: {e}"))?;
        let mut cmd = Command::new(&exe);
        cmd.arg("--iceoryx2-server")
            .arg(core.to_string())
            .arg("--iceoryx2-domain")
            .arg(&domain.id)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // Its own process group: a terminal's Ctrl-C reaches the bench only.
            .process_group(0);
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let command = format!(
            "{} --iceoryx2-server {core} --iceoryx2-domain {}",
            exe.display(),
            domain.id
        );
        let mut child = cmd.spawn().map_err(|e| format!("starting {command}: {e}"))?;
        let stdout = child.stdout.take().expect("piped");
        let stdin = child.stdin.take();
        let mut server = ServerProcess { child, stdin };
        // The ready line, or EOF if it failed (its error is on stderr, which is ours).
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let r = BufReader::new(stdout).read_line(&mut line).map(|_| line);
            let _ = tx.send(r);
        });
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(l)) if l.trim() == "ready" => Ok((server, command)),
            Ok(Ok(l)) => {
                let status = server.stop();
                Err(format!(
                    "{command}: {} ({status})",
                    if l.is_empty() {
                        "exited before it was ready"
                    } else {
                        l.trim()
                    }
                )
                .into())
            }
            Ok(Err(e)) => Err(format!("{command}: reading its output: {e}").into()),
            Err(_) => Err(format!("{command}: not ready within 10 s").into()),
        }
    }

    fn go(&mut self) -> Result<()> {
        let stdin = self.stdin.as_mut().ok_or("the iceoryx2 server's input is closed")?;
        stdin
            .write_all(&[GO])
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("starting an iceoryx2 server block: {e}").into())
    }

    /// Closes its input and waits for it to exit; SIGTERM after 200 ms (a server interrupted
    /// in the middle of a block still spins; it ends cleanly on SIGTERM), SIGKILL 2 s later.
    fn stop(&mut self) -> String {
        drop(self.stdin.take());
        let start = Instant::now();
        let mut termed = false;
        loop {
            match self.child.try_wait() {
                Ok(Some(st)) => return st.to_string(),
                Ok(None) if start.elapsed() < Duration::from_millis(200) => {}
                Ok(None) if !termed => {
                    termed = true;
                    // SAFETY: kill(2) on our own child, which has not been reaped (try_wait
                    // said it still runs), so the pid is still its.
                    unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
                }
                Ok(None) if start.elapsed() < Duration::from_millis(2200) => {}
                _ => {
                    let _ = self.child.kill();
                    return self
                        .child
                        .wait()
                        .map_or_else(|e| e.to_string(), |s| format!("{s}, killed"));
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// The client side, in the bench process. Field order is drop order: the client's port,
/// service and node go first, then the server process is stopped (its input closed).
struct Connection {
    client: Client<Svc, u64, (), u64, ()>,
    _service: iceoryx2::service::port_factory::request_response::PortFactory<Svc, u64, (), u64, ()>,
    _node: Node<Svc>,
    server: ServerProcess,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let status = self.stop();
        if status != "exit status: 0" {
            eprintln!("bench: the iceoryx2 server exited with {status}");
        }
    }
}

/// Sends `id` and spins until its response arrives (`Ok(false)`: none within `limit`).
fn round_trip(client: &Client<Svc, u64, (), u64, ()>, id: u64, limit: Duration) -> Result<bool> {
    let request = client
        .loan_uninit()
        .map_err(|e| format!("iceoryx2 request loan: {e:?}"))?;
    let pending = request
        .write_payload(id)
        .send()
        .map_err(|e| format!("iceoryx2 request send: {e:?}"))?;
    let start = Instant::now();
    let mut turns = 0u32;
    loop {
        if let Some(r) = pending
            .receive()
            .map_err(|e| format!("iceoryx2 response receive: {e:?}"))?
        {
            if *r != id {
                return Err(format!("iceoryx2 response {} to request {id}", *r).into());
            }
            return Ok(true);
        }
        turns = turns.wrapping_add(1);
        if turns & 0xfff == 0 {
            crate::interrupt::check()?;
            if start.elapsed() > limit {
                return Ok(false);
            }
        }
        std::hint::spin_loop();
    }
}

#[derive(Default)]
pub struct ReqRes {
    conn: Option<Connection>,
    domain: Option<Domain>,
    seq: u64,
    command: Option<String>,
}

impl Drop for ReqRes {
    fn drop(&mut self) {
        // Both processes' iceoryx2 objects are gone once the connection is (the server has
        // exited); then the domain's files can go.
        drop(self.conn.take());
        if let Some(d) = self.domain.take() {
            d.remove();
        }
    }
}

impl ReqRes {
    fn connect(&mut self, core: usize) -> Result<()> {
        let domain = self.domain.get_or_insert_with(Domain::new).clone();
        let (server, command) = ServerProcess::start(core, &domain)?;
        let node = node(&domain)?;
        let service = node
            .service_builder(&service_name()?)
            .request_response::<u64, u64>()
            .open()
            .map_err(|e| format!("opening iceoryx2 service {SERVICE}: {e:?}"))?;
        let client = service
            .client_builder()
            .create()
            .map_err(|e| format!("iceoryx2 client port: {e:?}"))?;
        let mut conn = Connection {
            client,
            _service: service,
            _node: node,
            server,
        };
        // The ports connect to each other lazily: the first requests may go unseen. Try
        // until one is answered, then pause the server.
        conn.server.go()?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            self.seq += 1;
            if round_trip(&conn.client, self.seq, Duration::from_millis(200))? {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!("the iceoryx2 server ({command}) answered no request within 5 s").into());
            }
        }
        if !round_trip(&conn.client, PAUSE, STALL_LIMIT)? {
            return Err("the iceoryx2 server did not answer the pause request".into());
        }
        self.conn = Some(conn);
        self.command = Some(command);
        Ok(())
    }
}

impl Scenario for ReqRes {
    fn run_block(&mut self, ctx: &mut Ctx, hist: &mut Histogram<u64>) -> Result<BlockRun> {
        if self.conn.is_none() {
            self.connect(ctx.engine_core)?;
        }
        let conn = self.conn.as_mut().expect("connected above");
        conn.server.go()?;
        let seq = &mut self.seq;
        let client = &conn.client;
        let run = sample_loop(ctx.timing, hist, || {
            *seq += 1;
            let want = *seq;
            let request = client
                .loan_uninit()
                .map_err(|e| format!("iceoryx2 request loan: {e:?}"))?;
            let pending = request
                .write_payload(want)
                .send()
                .map_err(|e| format!("iceoryx2 request send: {e:?}"))?;
            let mut guard = SpinGuard::new();
            loop {
                if let Some(r) = pending
                    .receive()
                    .map_err(|e| format!("iceoryx2 response receive: {e:?}"))?
                {
                    if *r != want {
                        return Err(format!("iceoryx2 response {} to request {want}", *r).into());
                    }
                    return Ok(());
                }
                guard.turn(|| format!("waiting for the iceoryx2 response to request {want}"))?;
            }
        });
        // Whatever happened, the server must stop spinning on the engine core.
        let paused = round_trip(client, PAUSE, STALL_LIMIT);
        let run = run?;
        if !paused? {
            return Err("the iceoryx2 server did not answer the pause request".into());
        }
        Ok(run)
    }

    fn details(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("iceoryx2_version".into(), ICEORYX2_VERSION.into());
        m.insert("service_type".into(), "ipc::Service (processes, shared memory)".into());
        m.insert(
            "payload".into(),
            "request u64, response u64 (zero-copy loans); service QoS: iceoryx2 defaults".into(),
        );
        m.insert(
            "server".into(),
            "child process (bench --iceoryx2-server) pinned to the engine core, busy-polling Server::receive during blocks".into(),
        );
        if let Some(c) = &self.command {
            m.insert("server_command".into(), c.clone().into());
        }
        m.insert("service_name".into(), SERVICE.into());
        if let Some(d) = &self.domain {
            m.insert(
                "domain".into(),
                format!(
                    "prefix {} under /dev/shm, root {} (removed at the end)",
                    d.id,
                    d.root().display()
                )
                .into(),
            );
        }
        m
    }
}
