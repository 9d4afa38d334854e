//! `uds.msgpack`: the design this project replaces. The same request/response as a ring NOP,
//! as length-prefixed MessagePack over a Unix domain socket between two processes: the bench
//! and a child of itself (`bench --uds-echo-server CORE`) pinned to the engine core.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{sample_loop, BlockRun, Ctx, Scenario, STALL_LIMIT};
use crate::Result;

/// The file descriptor the echo server finds its end of the socket pair on.
const SERVER_FD: i32 = 3;

/// Longest frame either side accepts.
const MAX_FRAME: usize = 1 << 20;

/// A NOP request, as a MessagePack map (field names on the wire, as such RPC protocols do).
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Request {
    pub id: u64,
    pub op: String,
    pub flags: u32,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Response {
    pub id: u64,
    pub result: i32,
}

/// Appends one frame to `buf`: a 4-byte little-endian length, then `msg` as a MessagePack map.
pub fn encode_frame<T: Serialize>(buf: &mut Vec<u8>, msg: &T) -> Result<()> {
    let at = buf.len();
    buf.extend_from_slice(&[0; 4]);
    rmp_serde::encode::write_named(buf, msg).map_err(|e| format!("msgpack encode: {e}"))?;
    let len = u32::try_from(buf.len() - at - 4).map_err(|_| "frame too long")?;
    buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

/// Reads one frame's body into `buf`. `Ok(false)`: the peer closed the stream before a frame.
pub fn read_frame(r: &mut impl Read, buf: &mut Vec<u8>) -> Result<bool> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(format!("reading a frame length: {e}").into()),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(format!("frame of {len} bytes (at most {MAX_FRAME})").into());
    }
    buf.resize(len, 0);
    r.read_exact(buf)
        .map_err(|e| format!("reading a frame of {len} bytes: {e}"))?;
    Ok(true)
}

/// The echo server (`bench --uds-echo-server CORE`): pins itself to CORE, answers each request
/// on fd 3 until the bench closes its end.
pub fn serve(core: usize) -> Result<()> {
    crate::machine::pin_current_thread(core)?;
    use std::os::fd::FromRawFd;
    // SAFETY: the bench hands this process fd 3, one end of a socket pair, and nothing else
    // in this process uses it.
    let mut s = unsafe { UnixStream::from_raw_fd(SERVER_FD) };
    let (mut rbuf, mut wbuf) = (Vec::with_capacity(256), Vec::with_capacity(256));
    while read_frame(&mut s, &mut rbuf)? {
        let req: Request = rmp_serde::from_slice(&rbuf).map_err(|e| format!("msgpack decode: {e}"))?;
        let result = if req.op == "nop" { 0 } else { -22 };
        wbuf.clear();
        encode_frame(&mut wbuf, &Response { id: req.id, result })?;
        s.write_all(&wbuf).map_err(|e| format!("writing a response: {e}"))?;
    }
    Ok(())
}

struct Server {
    child: Child,
    stream: UnixStream,
}

#[derive(Default)]
pub struct UdsMsgpack {
    server: Option<Server>,
    seq: u64,
    wbuf: Vec<u8>,
    rbuf: Vec<u8>,
    request_bytes: usize,
    response_bytes: usize,
}

fn start_server(engine_core: usize) -> Result<Server> {
    let exe = std::env::current_exe().map_err(|e| format!("the bench's own executable: {e}"))?;
    let (ours, theirs) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    ours.set_read_timeout(Some(STALL_LIMIT))
        .map_err(|e| format!("socket timeout: {e}"))?;
    let fd = theirs.as_raw_fd();
    let mut cmd = Command::new(&exe);
    cmd.arg("--uds-echo-server")
        .arg(engine_core.to_string())
        .stdin(Stdio::null())
        // Its own process group: a terminal's Ctrl-C reaches the bench only, which stops it.
        .process_group(0);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if fd == SERVER_FD {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, SERVER_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("starting {} --uds-echo-server: {e}", exe.display()))?;
    drop(theirs);
    Ok(Server { child, stream: ours })
}

impl Drop for UdsMsgpack {
    fn drop(&mut self) {
        if let Some(mut s) = self.server.take() {
            let _ = s.stream.shutdown(std::net::Shutdown::Both);
            drop(s.stream);
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                match s.child.try_wait() {
                    Ok(Some(st)) if st.success() => break,
                    Ok(Some(st)) => {
                        eprintln!("bench: the uds echo server exited with {st}");
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                    _ => {
                        let _ = s.child.kill();
                        let _ = s.child.wait();
                        break;
                    }
                }
            }
        }
    }
}

impl Scenario for UdsMsgpack {
    fn run_block(&mut self, ctx: &mut Ctx, hist: &mut Histogram<u64>) -> Result<BlockRun> {
        if self.server.is_none() {
            self.server = Some(start_server(ctx.engine_core)?);
        }
        let server = self.server.as_mut().expect("started above");
        let (seq, wbuf, rbuf) = (&mut self.seq, &mut self.wbuf, &mut self.rbuf);
        let (mut req_len, mut resp_len) = (0, 0);
        let stream = &mut server.stream;
        let child = &mut server.child;
        let run = sample_loop(ctx.timing, hist, || {
            *seq += 1;
            wbuf.clear();
            encode_frame(
                wbuf,
                &Request {
                    id: *seq,
                    op: "nop".into(),
                    flags: 0,
                },
            )?;
            req_len = wbuf.len();
            stream.write_all(wbuf).map_err(|e| format!("writing a request: {e}"))?;
            if !read_frame(stream, rbuf)? {
                let status = child.try_wait().ok().flatten();
                return Err(format!("the uds echo server closed the socket (exit status {status:?})").into());
            }
            resp_len = rbuf.len() + 4;
            let resp: Response = rmp_serde::from_slice(rbuf).map_err(|e| format!("msgpack decode: {e}"))?;
            if resp.id != *seq || resp.result != 0 {
                return Err(format!("unexpected response {resp:?} to request {}", *seq).into());
            }
            Ok(())
        })?;
        self.request_bytes = req_len;
        self.response_bytes = resp_len;
        Ok(run)
    }

    fn details(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert(
            "encoding".into(),
            "4-byte LE length + MessagePack map (rmp-serde)".into(),
        );
        m.insert("request_bytes".into(), self.request_bytes.into());
        m.insert("response_bytes".into(), self.response_bytes.into());
        m.insert(
            "server".into(),
            "child process (bench --uds-echo-server) pinned to the engine core, blocking reads".into(),
        );
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut buf = Vec::new();
        let req = Request {
            id: 7,
            op: "nop".into(),
            flags: 0,
        };
        encode_frame(&mut buf, &req).unwrap();
        let len = u32::from_le_bytes(buf[..4].try_into().unwrap()) as usize;
        assert_eq!(len, buf.len() - 4);
        // A map with field names: fixmap of 3.
        assert_eq!(buf[4], 0x83);
        encode_frame(&mut buf, &Response { id: 7, result: 0 }).unwrap();
        let mut r = std::io::Cursor::new(buf);
        let mut body = Vec::new();
        assert!(read_frame(&mut r, &mut body).unwrap());
        assert_eq!(rmp_serde::from_slice::<Request>(&body).unwrap(), req);
        assert!(read_frame(&mut r, &mut body).unwrap());
        assert_eq!(
            rmp_serde::from_slice::<Response>(&body).unwrap(),
            Response { id: 7, result: 0 }
        );
        assert!(!read_frame(&mut r, &mut body).unwrap(), "end of stream");
    }

    #[test]
    fn oversized_and_truncated_frames_are_errors() {
        let mut r = std::io::Cursor::new(u32::MAX.to_le_bytes().to_vec());
        assert!(read_frame(&mut r, &mut Vec::new()).is_err());
        let mut r = std::io::Cursor::new(vec![8, 0, 0, 0, 1, 2]);
        assert!(read_frame(&mut r, &mut Vec::new()).is_err());
    }
}
