//! The engine process the bench measures: started with a private socket and a pinned worker,
//! waited for until it serves, stopped with SIGTERM at the end (and on every error path,
//! through `Drop`; if the bench itself dies, the parent-death signal stops it).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use ring_client::{ConnectError, Session, SessionOptions};

use crate::scenarios::Tls;
use crate::Result;

/// How the engine is started.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub binary: PathBuf,
    /// The worker cores (`--cores`, one worker per core): one for every engine but those of
    /// `scale.nop.workers.N`.
    pub cores: Vec<usize>,
    /// `--idle-spin-us`: short, so the engine sleeps before each floor block.
    pub idle_spin_us: u64,
    /// Passed through after the bench's own flags. A flag given here replaces the bench's
    /// default for it (except `--socket` and `--cores`, which the bench owns).
    pub extra_args: Vec<String>,
    /// Where the engine's stderr goes; a file in the private temp dir when `None`.
    pub log_path: Option<PathBuf>,
    /// How long to wait for the socket to accept a session.
    pub start_timeout: Duration,
    /// A UCX listener on 127.0.0.1 (port chosen by the engine) over these transports
    /// (`--ucx-listen`, `--ucx-transports`, `--ucx-net-devices`).
    pub ucx: Option<Tls>,
    /// A SeaweedFS volume directory to serve (`--seaweedfs-dir`), for the needle scenarios.
    pub seaweedfs_dir: Option<PathBuf>,
    /// CPUs the engine process may use (its worker pins itself with `--cores`). The bench
    /// may start an engine from its pinned measuring thread; this undoes the inherited pin.
    pub cpus: Vec<usize>,
    /// Run in a network namespace (`ip netns exec`, which execs the engine in place), with
    /// the UCX flags for that side of the veth instead of loopback's.
    pub netns: Option<EngineNetns>,
}

/// Where an engine runs across the namespace pair (`crate::netns`).
#[derive(Debug, Clone)]
pub struct EngineNetns {
    /// The namespace (`NAME-a`, `NAME-b`).
    pub name: String,
    /// `--ucx-listen` (`IP:0` on the veth), or no listener (a client-only engine).
    pub listen: Option<String>,
    /// `--ucx-net-devices`: the namespace's end of the veth.
    pub device: String,
}

/// Finds the engine binary: `explicit`, else `engine` next to this executable.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        if !p.is_file() {
            return Err(format!("--engine {}: no such file", p.display()).into());
        }
        return Ok(p.to_owned());
    }
    let exe = std::env::current_exe().map_err(|e| format!("locating the bench executable: {e}"))?;
    let dir = exe.parent().ok_or("the bench executable has no parent directory")?;
    let p = dir.join("engine");
    if !p.is_file() {
        return Err(format!(
            "engine binary not found at {} (build it with `cargo build --release -p engine`, or pass --engine PATH)",
            p.display()
        )
        .into());
    }
    Ok(p)
}

pub struct Engine {
    child: Option<Child>,
    /// Private directory holding the socket (and the log unless one was given).
    dir: PathBuf,
    pub socket: PathBuf,
    log_path: PathBuf,
    command_line: String,
}

impl Engine {
    /// Starts the engine and opens the bench's session once the socket serves.
    pub fn start(opts: &EngineOptions) -> Result<(Engine, Session)> {
        let dir = private_dir()?;
        let socket = dir.join("engine.sock");
        let log_path = opts.log_path.clone().unwrap_or_else(|| dir.join("engine.log"));
        let log = File::create(&log_path).map_err(|e| format!("creating {}: {e}", log_path.display()))?;
        let log_err = log.try_clone().map_err(|e| format!("{}: {e}", log_path.display()))?;

        let mut args: Vec<String> = vec![
            "--socket".into(),
            socket.display().to_string(),
            "--cores".into(),
            opts.cores.iter().map(usize::to_string).collect::<Vec<_>>().join(","),
        ];
        let idle = opts.idle_spin_us.to_string();
        for (flag, value) in [
            ("--hugepages", "prefer"),
            ("--idle-spin-us", idle.as_str()),
            // No lease: no keepalive thread in the bench, no lease checks in the engine.
            ("--lease-ms", "0"),
            ("--log-level", "info"),
        ] {
            let overridden = opts
                .extra_args
                .iter()
                .any(|a| a == flag || a.starts_with(&format!("{flag}=")));
            if !overridden {
                args.push(flag.into());
                args.push(value.into());
            }
        }
        match (opts.ucx, &opts.netns) {
            (Some(tls), None) => {
                // Reads through the engine's own listener go through UCX, except in the
                // scenarios that measure the shortcut (`needle.read.<size>.local`).
                let local = if tls == Tls::Local { "true" } else { "false" };
                for (flag, value) in [
                    ("--ucx-listen", "127.0.0.1:0"),
                    ("--ucx-transports", tls.transports()),
                    ("--ucx-net-devices", tls.net_devices()),
                    ("--ucx-local-reads", local),
                ] {
                    args.push(flag.into());
                    args.push(value.into());
                }
            }
            (Some(tls), Some(n)) => {
                if let Some(l) = &n.listen {
                    args.extend(["--ucx-listen".into(), l.clone()]);
                }
                args.extend([
                    "--ucx-transports".into(),
                    tls.transports().into(),
                    "--ucx-net-devices".into(),
                    n.device.clone(),
                    "--ucx-local-reads".into(),
                    "false".into(),
                ]);
            }
            (None, _) => {}
        }
        if let Some(dir) = &opts.seaweedfs_dir {
            args.push("--seaweedfs-dir".into());
            args.push(dir.display().to_string());
        }
        args.extend(opts.extra_args.iter().cloned());
        let mut command_line = format!("{} {}", opts.binary.display(), args.join(" "));
        let mut cmd = match &opts.netns {
            None => Command::new(&opts.binary),
            Some(n) => {
                command_line = format!("ip netns exec {} {command_line}", n.name);
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &n.name]).arg(&opts.binary);
                c
            }
        };
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            // Own process group: a terminal's Ctrl-C reaches only the bench, which then stops
            // the engine itself after the current block.
            .process_group(0);
        // SAFETY: cpu_set_t is plain data; all zeroes is the empty set.
        let mut cpus: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for &c in opts.cpus.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
            // SAFETY: c is below CPU_SETSIZE, so the bit is inside the set.
            unsafe { libc::CPU_SET(c, &mut cpus) };
        }
        let reset_cpus = !opts.cpus.is_empty();
        // SAFETY: prctl and sched_setaffinity are async-signal-safe system calls; `cpus` is
        // a copy owned by the closure.
        unsafe {
            cmd.pre_exec(move || {
                if reset_cpus && libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &cpus) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The engine gets SIGTERM if the thread that spawned it (the bench's main
                // thread, alive for the whole run) dies, even by SIGKILL or abort.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| format!("starting {command_line}: {e}"))?;
        let mut engine = Engine {
            child: Some(child),
            dir,
            socket,
            log_path,
            command_line,
        };
        let session = engine.wait_ready(opts.start_timeout)?;
        Ok((engine, session))
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<Session> {
        let deadline = Instant::now() + timeout;
        let opts = SessionOptions {
            keepalive: false,
            ..SessionOptions::default()
        };
        loop {
            if let Some(status) = self.try_wait() {
                return Err(format!(
                    "the engine exited during start-up ({status})\ncommand: {}\nengine log:\n{}",
                    self.command_line,
                    self.log_tail(40)
                )
                .into());
            }
            if self.socket.exists() {
                match Session::connect(&self.socket, opts.clone()) {
                    Ok(s) => return Ok(s),
                    Err(ConnectError::EngineNotRunning { .. }) => {}
                    Err(e) => {
                        return Err(format!(
                            "connecting to the engine at {}: {e}\ncommand: {}\nengine log:\n{}",
                            self.socket.display(),
                            self.command_line,
                            self.log_tail(40)
                        )
                        .into())
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the engine did not accept a session on {} within {timeout:?}\ncommand: {}\nengine log:\n{}",
                    self.socket.display(),
                    self.command_line,
                    self.log_tail(40)
                )
                .into());
            }
            crate::interrupt::check()?;
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The exit status, if the engine has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// The engine's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    pub fn command_line(&self) -> &str {
        &self.command_line
    }

    /// The last `lines` lines of the engine's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// The address of the engine's UCX listener, from its log line
    /// `UCX listening address=...` (waiting for it at most `timeout`).
    pub fn ucx_listen_address(&mut self, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(a) = listen_address_from_log(&self.log()) {
                return Ok(a.to_owned());
            }
            if let Some(status) = self.try_wait() {
                return Err(format!("the engine exited ({status}) before its UCX listener was up").into());
            }
            if Instant::now() >= deadline {
                return Err(format!("the engine did not log \"UCX listening address=...\" within {timeout:?}").into());
            }
            crate::interrupt::check()?;
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Which pages the engine said session regions use.
    pub fn pages(&self) -> Option<String> {
        pages_from_log(&self.log()).map(str::to_owned)
    }

    /// SIGTERM, then waits (SIGKILL after `grace`). Returns the exit status.
    pub fn stop(mut self, grace: Duration) -> Result<ExitStatus> {
        let child = self.child.take().ok_or("engine already stopped")?;
        terminate(child, grace).map_err(|e| e.into())
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            let _ = terminate(child, Duration::from_secs(5));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn terminate(mut child: Child, grace: Duration) -> std::io::Result<ExitStatus> {
    if let Some(status) = child.try_wait()? {
        return Ok(status);
    }
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            eprintln!("bench: the engine did not exit {grace:?} after SIGTERM; sending SIGKILL");
            child.kill()?;
            return child.wait();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A fresh 0700 directory under the temp dir.
fn private_dir() -> Result<PathBuf> {
    let base = std::env::temp_dir();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = base.join(format!("swring-bench-{}-{nanos:x}", std::process::id()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    Ok(dir)
}

/// Page kind from the engine's start-up log line.
pub fn pages_from_log(log: &str) -> Option<&'static str> {
    if log.contains("session regions use 2 MiB huge pages") {
        Some("huge")
    } else if log.contains("session regions fall back to normal pages") || log.contains("hugepages = off") {
        Some("normal")
    } else {
        None
    }
}

/// The lanes UCX chose for the engine's first peer connection, from its
/// `peer connection transports ... lanes=...` log line (to the end of the line).
pub fn peer_lanes_from_log(log: &str) -> Option<&str> {
    let line = log.lines().find(|l| l.contains("peer connection transports"))?;
    let lanes = line.split_once("lanes=")?.1.trim();
    (!lanes.is_empty()).then_some(lanes.trim_matches('"'))
}

/// The address in the engine's `UCX listening address=127.0.0.1:PORT` log line.
pub fn listen_address_from_log(log: &str) -> Option<&str> {
    log.lines()
        .find(|l| l.contains("UCX listening"))?
        .split("address=")
        .nth(1)?
        .split_whitespace()
        .next()
        .map(|a| a.trim_matches('"'))
        .filter(|a| !a.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_address_is_read_from_the_engine_log() {
        let log = "2026-11-26T09:05:16.839791Z  INFO engine::control: engine ready\n\
                   2026-11-26T09:05:16.839800Z  INFO worker{id=0}: engine::dataplane: UCX listening address=127.0.0.1:40123\n";
        assert_eq!(listen_address_from_log(log), Some("127.0.0.1:40123"));
        assert_eq!(
            listen_address_from_log("INFO UCX listening address=\"[::1]:5\" other=1"),
            Some("[::1]:5")
        );
        assert_eq!(listen_address_from_log("INFO engine ready"), None);
        let log = "INFO engine::dataplane: peer connection transports peer=1 address=127.0.0.1:1 \
                   lanes=lane[0]: cm rdmacm | lane[1]: 1:sysv/memory.0 md[1] am keepalive\nINFO next";
        assert_eq!(
            peer_lanes_from_log(log),
            Some("lane[0]: cm rdmacm | lane[1]: 1:sysv/memory.0 md[1] am keepalive")
        );
        assert_eq!(peer_lanes_from_log("INFO engine ready"), None);
        assert_eq!(listen_address_from_log("INFO UCX listening address="), None);
    }

    #[test]
    fn pages_are_read_from_the_engine_log() {
        assert_eq!(
            pages_from_log("INFO session regions use 2 MiB huge pages policy=Prefer"),
            Some("huge")
        );
        assert_eq!(
            pages_from_log("WARN no huge pages available: session regions fall back to normal pages (...)"),
            Some("normal")
        );
        assert_eq!(pages_from_log("INFO engine ready"), None);
    }
}
