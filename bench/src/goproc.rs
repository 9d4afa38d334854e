//! A `ringlat` child process (go-client/cmd/ringlat) spoken to by lines: the Go scenarios'
//! `ringlat -serve` and the needle scenarios' `ringlat -weed`.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Result;

/// A running `ringlat` (`-serve` for a Go scenario, `-weed` for the needle scenarios' volume
/// server): a line protocol on its stdin and stdout.
pub struct Ringlat {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    stderr: Option<ChildStderr>,
    buf: Vec<u8>,
    command: String,
    /// How long Drop waits for it to exit after closing its input, before SIGKILL.
    exit_grace: Duration,
}

impl Ringlat {
    /// Starts `path` with `args`. With `cpu` = None it inherits the calling thread's CPU mask
    /// (the Go scenarios start it from the measuring thread, pinned to the client core: every
    /// Go thread stays on the client core, so GOMAXPROCS is 1 and nothing of Go runs on the
    /// engine core); with `Some(c)` the process is pinned to CPU `c` before it runs.
    pub fn spawn(path: &Path, args: &[String], cpu: Option<usize>) -> Result<Self> {
        Self::spawn_on(path, args, cpu.map(|c| vec![c]))
    }

    /// [`Ringlat::spawn`] with the process allowed on every CPU of `cpus` (`None`: inherit).
    pub fn spawn_on(path: &Path, args: &[String], cpus: Option<Vec<usize>>) -> Result<Self> {
        let command = format!("{} {}", path.display(), args.join(" "));
        let mut cmd = Command::new(path);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Own process group: a terminal's Ctrl-C reaches only the bench, which ends
            // ringlat itself.
            .process_group(0);
        // SAFETY: cpu_set_t is plain data; all zeroes is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for &c in cpus.iter().flatten().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
            // SAFETY: c is below CPU_SETSIZE, so the bit is inside the set.
            unsafe { libc::CPU_SET(c, &mut set) };
        }
        let pin = cpus.is_some();
        // SAFETY: prctl and sched_setaffinity are async-signal-safe and touch no memory of
        // the parent (`set` is a copy owned by the closure).
        unsafe {
            cmd.pre_exec(move || {
                if pin && libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // ringlat dies with the thread that started it (the bench's main thread).
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| format!("starting {command}: {e}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take();
        Ok(Self {
            child,
            stdin,
            stdout,
            stderr,
            buf: Vec::new(),
            command,
            exit_grace: Duration::from_secs(3),
        })
    }

    /// How long dropping it waits for it to exit (after closing its input) before SIGKILL.
    pub fn set_exit_grace(&mut self, d: Duration) {
        self.exit_grace = d;
    }

    pub fn send(&mut self, line: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().ok_or("ringlat's input is closed")?;
        stdin
            .write_all(line.as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("writing to ringlat: {e}").into())
    }

    /// The next line of ringlat's output, waiting at most `timeout` (checking for Ctrl-C).
    pub fn read_line(&mut self, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let mut chunk = [0u8; 64 << 10];
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return Ok(String::from_utf8_lossy(&line[..pos]).into_owned());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("ringlat did not answer within {timeout:?}").into());
            }
            let mut pfd = libc::pollfd {
                fd: self.stdout.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let wait_ms = left.min(Duration::from_millis(100)).as_millis() as libc::c_int;
            // SAFETY: one valid pollfd for the duration of the call.
            let r = unsafe { libc::poll(&mut pfd, 1, wait_ms.max(1)) };
            crate::interrupt::check()?;
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(format!("waiting for ringlat: {e}").into());
            }
            if r == 0 {
                continue;
            }
            let n = self
                .stdout
                .read(&mut chunk)
                .map_err(|e| format!("reading ringlat's output: {e}"))?;
            if n == 0 {
                return Err("ringlat exited".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited after `grace` (for `ringlat -weed`, which
    /// then stops the weed servers and removes its directory).
    pub fn terminate(&mut self, grace: Duration) {
        // SAFETY: kill(2) with the child's pid, which is ours until we wait for it.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Ends ringlat and describes the failure with what it wrote on stderr.
    pub fn failure(&mut self, what: &str) -> crate::Error {
        let _ = self.child.kill();
        let status = self.child.wait().map_or(String::new(), |s| format!(" ({s})"));
        let mut err = String::new();
        if let Some(mut e) = self.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        format!(
            "{what}\nringlat{status}: {}\nringlat stderr:\n{}",
            self.command,
            err.trim_end()
        )
        .into()
    }
}

impl Drop for Ringlat {
    fn drop(&mut self) {
        // End of input: ringlat closes its session and exits.
        drop(self.stdin.take());
        let deadline = Instant::now() + self.exit_grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
