//! Which UCX runtime this process loaded, and whether a stranger can abort it.
//!
//! UCX's socket connection manager (`tcp_sockcm_ep.c`, unchanged from 1.12 to the 1.22 era)
//! trusts the 8-byte length in the first 16 bytes a connecting peer sends: when more bytes
//! arrived than that length announces, a build with assertions (Debian's libucx0 1.13.1, or
//! any UCX configured without `--disable-assertions`) fails `cep->comm_ctx.offset <=
//! cep->comm_ctx.length` and aborts the whole process. A build without assertions (the one
//! `scripts/install-deps` installs; `contrib/configure-release`) just never completes that
//! connection. The version number cannot tell the two apart, so the engine asks the runtime
//! itself: [`probe_malformed_connection_request`] runs a child process on the same library
//! that sends exactly that input to its own listener.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{Context, Worker};

/// What this project measured (tests/tests/stranger.rs), for the start-up log line.
pub const KNOWN_SAFE: &str = "1.22.0 as scripts/install-deps installs it (PyPI libucx-cu12, --disable-assertions); 1.12.1 as ucx1-sys builds it (configure-release)";
/// Measured aborting on a malformed connection request.
pub const KNOWN_UNSAFE: &str =
    "1.13.1 of Debian/Ubuntu libucx0; any UCX built with assertions (the default of ./configure)";
/// Where the engine binary looks for libucp first (its rpath, engine/ucx_runtime_path.rs).
pub const EXPECTED_DIR: &str = env!("SWRING_UCX_RUNTIME_DIR");
/// The argument that makes the engine binary run [`run_probe`] instead of the engine.
pub const PROBE_ARG: &str = "__ucx-listener-probe";

/// The libucp this process runs on.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub version: (u32, u32, u32),
    /// The file libucp was loaded from, when the loader can say.
    pub library: Option<PathBuf>,
}

impl Runtime {
    pub fn version_string(&self) -> String {
        let (a, b, c) = self.version;
        format!("{a}.{b}.{c}")
    }

    pub fn library_string(&self) -> String {
        self.library
            .as_ref()
            .map_or_else(|| "(unknown file)".to_string(), |p| p.display().to_string())
    }
}

/// The loaded libucp's version and file.
pub fn loaded() -> Runtime {
    // Safety: dladdr only reads the loader's tables for an address inside a loaded object
    // (ucp_get_version is one, resolved by the dynamic linker) and fills `info`; the name it
    // points to stays valid while libucp is loaded (for the whole process: it is never
    // unloaded).
    let library = unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        let addr = ucx1_sys::ucp_get_version as *const libc::c_void;
        if libc::dladdr(addr, &mut info) != 0 && !info.dli_fname.is_null() {
            let name = std::ffi::CStr::from_ptr(info.dli_fname).to_string_lossy().into_owned();
            Some(std::fs::canonicalize(&name).unwrap_or_else(|_| PathBuf::from(name)))
        } else {
            None
        }
    };
    Runtime {
        version: super::loaded_version(),
        library,
    }
}

/// What the probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The runtime survived the malformed connection request.
    Survives,
    /// The probe process died of it (how, and the runtime's last words).
    Aborts(String),
    /// The probe could not be run or ended otherwise; the runtime is not known to be safe.
    Unknown(String),
}

/// Runs this binary as `PROBE_ARG` (so on the same libucp, with the same UCX_* environment)
/// and reports whether it survived. Takes about a quarter of a second.
pub fn probe_malformed_connection_request() -> ProbeOutcome {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return ProbeOutcome::Unknown(format!("cannot find the engine binary: {e}")),
    };
    let child = Command::new(exe)
        .arg(PROBE_ARG)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return ProbeOutcome::Unknown(format!("cannot start the probe: {e}")),
    };
    // A hang guard only: the probe itself stops after PROBE_RUN.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return ProbeOutcome::Unknown("the probe did not finish within 30 s".into());
            }
            Err(e) => return ProbeOutcome::Unknown(format!("waiting for the probe: {e}")),
        }
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    let last_words = stderr
        .lines()
        .find(|l| l.contains("Assertion"))
        .or_else(|| stderr.lines().rev().find(|l| !l.trim().is_empty()))
        .unwrap_or("")
        .trim()
        .to_string();
    match (status.code(), status.signal()) {
        (Some(0), _) => ProbeOutcome::Survives,
        (_, Some(sig)) => ProbeOutcome::Aborts(format!("killed by signal {sig}: {last_words}")),
        (Some(code), _) => ProbeOutcome::Unknown(format!("the probe exited with {code}: {last_words}")),
        (None, None) => ProbeOutcome::Unknown("the probe ended without a status".into()),
    }
}

/// How long the probe keeps its worker progressing after sending.
const PROBE_RUN: Duration = Duration::from_millis(250);

/// The probe process: a listener on loopback, one TCP connection that announces 0 bytes of
/// private data and sends 48 more, progress for [`PROBE_RUN`]. Exit 0 if still alive.
pub fn run_probe() -> Result<(), String> {
    let ctx = Context::new(Some("tcp"), Some("lo")).map_err(|e| format!("UCX context: {e}"))?;
    let mut worker = Worker::new(ctx, &[]).map_err(|e| format!("UCX worker: {e}"))?;
    let listener = worker
        .listen(SocketAddr::from(([127, 0, 0, 1], 0)))
        .map_err(|e| format!("UCX listener on 127.0.0.1: {e}"))?;
    let mut stream = TcpStream::connect(listener.addr).map_err(|e| format!("connect to the listener: {e}"))?;
    // uct_tcp_sockcm_priv_data_hdr_t: size_t length (0 here), u8 status, padding to 16.
    let mut bytes = [0x5au8; 64];
    bytes[..16].fill(0);
    stream.write_all(&bytes).map_err(|e| format!("send: {e}"))?;
    let end = Instant::now() + PROBE_RUN;
    while Instant::now() < end {
        worker.progress(&mut |_| {});
        drop(worker.take_conn_requests());
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(stream);
    listener.destroy();
    Ok(())
}

/// Whether `addr` can be reached from other hosts.
pub fn beyond_loopback(addr: &SocketAddr) -> bool {
    !addr.ip().is_loopback()
}
