//! The Go client through the real engine: `ringlat -serve` (go-client/cmd/ringlat), one
//! long-lived subprocess per scenario with a session of its own, pinned to the client core,
//! running one block per command line it reads (protocol in go-client/cmd/ringlat/serve.go).
//!
//! While ringlat runs a block, the bench's measuring thread waits in `poll` on its output
//! (asleep, so the client core is ringlat's). ringlat times its blocks the way
//! [`super::sample_loop`] does (warm-up by time, one monotonic clock read per sample) and
//! answers with its histogram in HdrHistogram's bucket layout, which is recorded here into
//! the block's histogram: block p50s of Go and Rust scenarios are computed the same way.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{BlockRun, Ctx, Scenario, STALL_LIMIT};
use crate::stats::HIGHEST_NS;
use crate::Result;

/// How long ringlat may take to start and open its session.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `Client.Do` of one NOP per sample.
    Nop,
    /// `SubmitBatch` of this many NOPs and a `Wait` for each, per sample.
    Batch(u32),
}

impl Kind {
    fn command_word(self) -> &'static str {
        match self {
            Kind::Nop => "nop",
            Kind::Batch(_) => "batch",
        }
    }
}

/// `ring.nop.go`, `ring.nop_batch32.go`.
pub struct GoRinglat {
    name: &'static str,
    kind: Kind,
    proc: Option<Ringlat>,
    details: Map<String, Value>,
}

impl GoRinglat {
    pub fn new(name: &'static str, kind: Kind) -> Self {
        Self {
            name,
            kind,
            proc: None,
            details: Map::new(),
        }
    }

    fn start(&mut self, ctx: &Ctx) -> Result<()> {
        let path = ctx
            .ringlat
            .as_deref()
            .ok_or("no ringlat binary (the Go scenarios need one)")?;
        let socket = ctx
            .socket
            .as_deref()
            .ok_or("this scenario needs the engine, and none was started")?;
        let batch = match self.kind {
            Kind::Batch(n) => n,
            Kind::Nop => 32,
        };
        let mut p = Ringlat::spawn(path, socket, ctx.client_core, batch)?;
        let line = match p.read_line(READY_TIMEOUT) {
            Ok(l) => l,
            Err(e) => return Err(p.failure(&format!("waiting for ringlat to start: {e}"))),
        };
        let ready: Value = serde_json::from_str(&line)
            .map_err(|e| p.failure(&format!("ringlat's first line is not JSON ({e}): {line}")))?;
        if ready["ready"] != true {
            return Err(p.failure(&format!("ringlat did not start: {line}")));
        }
        self.details.insert("ringlat".into(), path.display().to_string().into());
        for key in ["go", "gomaxprocs", "session", "core"] {
            if let Some(v) = ready.get(key) {
                self.details.insert(format!("ringlat_{key}"), v.clone());
            }
        }
        self.proc = Some(p);
        Ok(())
    }
}

impl Scenario for GoRinglat {
    fn run_block(&mut self, ctx: &mut Ctx, hist: &mut Histogram<u64>) -> Result<BlockRun> {
        if self.proc.is_none() {
            self.start(ctx)?;
        }
        let timing = ctx.timing;
        let p = self.proc.as_mut().expect("started above");
        let cmd = format!(
            "block {} {} {}\n",
            self.kind.command_word(),
            timing.warmup.as_nanos(),
            timing.measure.as_nanos()
        );
        let answer = p
            .send(&cmd)
            .and_then(|()| p.read_line(timing.warmup + timing.measure + STALL_LIMIT));
        let result = answer.and_then(|line| {
            let b = GoBlock::parse(&line)?;
            if b.scenario != self.name {
                return Err(format!("ringlat answered for {:?}, expected {}", b.scenario, self.name).into());
            }
            b.record_into(hist)?;
            Ok(BlockRun {
                samples: b.samples,
                elapsed: Duration::from_nanos(b.elapsed_ns),
            })
        });
        result.map_err(|e| {
            if e.is::<crate::interrupt::Interrupted>() {
                return e;
            }
            let mut p = self.proc.take().expect("running");
            p.failure(&e.to_string())
        })
    }

    fn details(&self) -> Map<String, Value> {
        self.details.clone()
    }
}

/// One block as ringlat reports it.
#[derive(Debug, Deserialize)]
pub struct GoBlock {
    pub scenario: String,
    pub samples: u64,
    pub elapsed_ns: u64,
    /// Non-empty buckets: (lowest value of the bucket in ns, count).
    pub hist: Vec<(u64, u64)>,
}

impl GoBlock {
    /// Parses one answer line; `{"error": ...}` becomes the error.
    pub fn parse(line: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(line).map_err(|e| format!("ringlat's answer is not JSON ({e}): {line}"))?;
        if let Some(err) = v.get("error") {
            return Err(format!("ringlat failed: {}", err.as_str().unwrap_or(&err.to_string())).into());
        }
        serde_json::from_value(v).map_err(|e| format!("ringlat's answer is malformed ({e}): {line}").into())
    }

    /// Records the buckets into `hist` (ns); the counts must add up to `samples`.
    pub fn record_into(&self, hist: &mut Histogram<u64>) -> Result<()> {
        let mut total = 0u64;
        for &(value, count) in &self.hist {
            hist.saturating_record_n(value.clamp(1, HIGHEST_NS), count);
            total += count;
        }
        if total != self.samples || self.samples == 0 {
            return Err(format!(
                "ringlat's histogram holds {total} samples, its block {} (expected equal and > 0)",
                self.samples
            )
            .into());
        }
        Ok(())
    }
}

/// A running `ringlat -serve`.
struct Ringlat {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    stderr: Option<ChildStderr>,
    buf: Vec<u8>,
    command: String,
}

impl Ringlat {
    /// Starts ringlat from the calling thread (the measuring thread, pinned to the client
    /// core, whose CPU mask the process inherits: every Go thread stays on the client core,
    /// so GOMAXPROCS is 1 and nothing of Go runs on the engine core).
    fn spawn(path: &Path, socket: &Path, core: usize, batch: u32) -> Result<Self> {
        let args = [
            "-serve".to_string(),
            "-socket".into(),
            socket.display().to_string(),
            "-core".into(),
            core.to_string(),
            "-batch".into(),
            batch.to_string(),
        ];
        let command = format!("{} {}", path.display(), args.join(" "));
        let mut cmd = Command::new(path);
        cmd.args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Own process group: a terminal's Ctrl-C reaches only the bench, which ends
            // ringlat itself.
            .process_group(0);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
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
        })
    }

    fn send(&mut self, line: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().ok_or("ringlat's input is closed")?;
        stdin
            .write_all(line.as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("writing to ringlat: {e}").into())
    }

    /// The next line of ringlat's output, waiting at most `timeout` (checking for Ctrl-C).
    fn read_line(&mut self, timeout: Duration) -> Result<String> {
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

    /// Ends ringlat and describes the failure with what it wrote on stderr.
    fn failure(&mut self, what: &str) -> crate::Error {
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
        let deadline = Instant::now() + Duration::from_secs(3);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::new_histogram;

    #[test]
    fn block_answer_is_parsed_and_recorded() {
        let line = r#"{"scenario":"ring.nop.go","samples":6,"elapsed_ns":1000,"hist":[[250,3],[260,2],[4100,1]]}"#;
        let b = GoBlock::parse(line).unwrap();
        assert_eq!(b.scenario, "ring.nop.go");
        let mut h = new_histogram();
        b.record_into(&mut h).unwrap();
        assert_eq!(h.len(), 6);
        assert_eq!(h.value_at_quantile(0.5), 250);
        assert_eq!(h.value_at_quantile(0.75), 260);
        assert!(h.equivalent(h.max(), 4100));
    }

    #[test]
    fn error_answers_and_bad_counts_are_errors() {
        let e = GoBlock::parse(r#"{"error":"engine unavailable"}"#).unwrap_err();
        assert!(e.to_string().contains("engine unavailable"), "{e}");
        assert!(GoBlock::parse("not json").is_err());
        assert!(GoBlock::parse(r#"{"scenario":"x"}"#).is_err());
        let b = GoBlock::parse(r#"{"scenario":"x","samples":5,"elapsed_ns":1,"hist":[[1,4]]}"#).unwrap();
        assert!(b.record_into(&mut new_histogram()).is_err());
    }

    /// ringlat reports each bucket by its lowest value (go-client/cmd/ringlat/serve.go,
    /// bucketFloor); recorded here, that value must fall into the same bucket as the
    /// values it stands for, so Go and Rust percentiles have the same precision.
    #[test]
    fn go_bucket_floors_land_in_the_same_bucket() {
        let h = new_histogram();
        // The Go layout, written out: exact below 2048, then 1024 buckets per power of two.
        let go_floor = |v: u64| -> u64 {
            if v < 2048 {
                v
            } else {
                let shift = 64 - v.leading_zeros() - 11;
                (v >> shift) << shift
            }
        };
        for v in (1..5000u64).chain([123_456, 999_999, 7_654_321, 59_999_999_999]) {
            assert_eq!(h.lowest_equivalent(v), go_floor(v), "value {v}");
        }
    }
}
