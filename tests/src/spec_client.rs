//! A client written from `ring-proto/SPEC.md` alone, with raw libc calls: no `ring-proto`,
//! `ring-client` or engine code. Every constant and offset below is copied from the SPEC
//! text (section in the comment), so a test that passes with it checks the document as well
//! as the engine. It also exposes everything a hostile client holds (the raw socket, every
//! received fd, the whole mapping) so tests can attack exactly those.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

// §2 packet header.
pub const MAGIC: u32 = 0x5043_5753;
pub const CONTROL_VERSION: u16 = 2;
pub const MAX_MESSAGE: usize = 512;
pub const MAX_STATUS_PACKET: usize = 65536;
pub mod kind {
    pub const HELLO: u16 = 1;
    pub const WELCOME: u16 = 2;
    pub const ERROR: u16 = 3;
    pub const CLOSE: u16 = 4;
    pub const CLOSED: u16 = 5;
    pub const PING: u16 = 6;
    pub const PONG: u16 = 7;
    pub const CONNECT_PEER: u16 = 8;
    pub const PEER_CONNECTED: u16 = 9;
    pub const STATUS: u16 = 32;
    pub const STATUS_REPLY: u16 = 33;
}
// §2 error codes.
pub mod error_code {
    pub const VERSION_MISMATCH: u32 = 1;
    pub const BAD_REQUEST: u32 = 2;
    pub const MALFORMED: u32 = 7;
}
// §3 region header.
pub const REGION_MAGIC: u64 = 0x0100_474E_4952_5753;
pub const LAYOUT_VERSION: u32 = 3;
pub const HDR_STATE: usize = 88;
pub const HDR_CLOSE_REASON: usize = 92;
pub const HDR_CLIENT_HEARTBEAT: usize = 104;
pub const SQ_CTL: usize = 256;
pub const CQ_CTL: usize = 640;
pub const SQ_ARRAY: usize = 1024;
pub const CTL_HEAD: usize = 0;
pub const CTL_FLAGS: usize = 256;
pub const CTL_INVALID: usize = 260;
pub const NEED_WAKEUP: u32 = 1;
// §4/§5 the control byte, bits 16..23 of word 0 of every entry.
pub const CTL_PHASE: u64 = 1 << 16;
pub const CTL_MASK: u64 = 0xff << 16;
// §8 states.
pub const STATE_READY: u32 = 1;
pub const STATE_CLOSED: u32 = 3;
pub const STATE_BROKEN: u32 = 4;
// §4 opcodes.
pub const OP_NOP: u64 = 1;
pub const OP_FILL: u64 = 2;

fn align_up(v: usize, a: usize) -> usize {
    (v + a - 1) & !(a - 1)
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// One control packet as received: its bytes, the fds that came with it, recvmsg's flags.
pub struct Packet {
    pub bytes: Vec<u8>,
    pub fds: Vec<OwnedFd>,
    pub flags: i32,
}

impl Packet {
    pub fn kind(&self) -> u16 {
        u16::from_le_bytes([self.bytes[6], self.bytes[7]])
    }
    pub fn payload(&self) -> &[u8] {
        &self.bytes[8..]
    }
    /// `(code, message)` of an Error packet.
    pub fn error(&self) -> Option<(u32, String)> {
        if self.bytes.len() < 16 || self.kind() != kind::ERROR {
            return None;
        }
        let p = self.payload();
        let code = u32::from_le_bytes(p[0..4].try_into().unwrap());
        Some((code, String::from_utf8_lossy(&p[8..]).into_owned()))
    }
}

/// Builds a packet: §2 header then `payload`.
pub fn packet(version: u16, kind: u16, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + payload.len());
    b.extend_from_slice(&MAGIC.to_le_bytes());
    b.extend_from_slice(&version.to_le_bytes());
    b.extend_from_slice(&kind.to_le_bytes());
    b.extend_from_slice(payload);
    b
}

/// A Hello packet (§2), `reserved` as given (SPEC: MUST be 0).
pub fn hello(sq: u32, cq: u32, reserved: u32, buf: u64) -> Vec<u8> {
    let mut p = Vec::new();
    for v in [LAYOUT_VERSION, sq, cq, reserved] {
        p.extend_from_slice(&v.to_le_bytes());
    }
    p.extend_from_slice(&buf.to_le_bytes());
    packet(CONTROL_VERSION, kind::HELLO, &p)
}

/// A raw control connection (§2: AF_UNIX, SOCK_SEQPACKET).
pub struct Conn {
    pub sock: OwnedFd,
}

impl Conn {
    pub fn connect(path: &Path) -> std::io::Result<Conn> {
        // Safety: plain syscalls on values we own; the address is fully initialised below.
        unsafe {
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                return Err(errno());
            }
            let sock = OwnedFd::from_raw_fd(fd);
            let mut addr: libc::sockaddr_un = std::mem::zeroed();
            addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
            let p = path.as_os_str().as_encoded_bytes();
            assert!(p.len() < addr.sun_path.len(), "socket path too long");
            for (d, s) in addr.sun_path.iter_mut().zip(p) {
                *d = *s as libc::c_char;
            }
            let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
            if libc::connect(fd, &addr as *const _ as *const libc::sockaddr, len) != 0 {
                return Err(errno());
            }
            Ok(Conn { sock })
        }
    }

    /// Sends one packet with `fds` as SCM_RIGHTS (any number, as an attacker would).
    pub fn send(&self, bytes: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
        // Safety: CMSG_SPACE only computes a size from its argument; it touches no memory.
        let space = unsafe { libc::CMSG_SPACE(std::mem::size_of_val(fds) as u32) };
        let mut cbuf = vec![0u8; space as usize];
        let mut iov = libc::iovec {
            iov_base: bytes.as_ptr() as *mut libc::c_void,
            iov_len: bytes.len(),
        };
        // Safety: msghdr points at live buffers of the stated lengths for the whole call.
        unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            if !fds.is_empty() {
                msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
                msg.msg_controllen = cbuf.len() as _;
                let c = libc::CMSG_FIRSTHDR(&msg);
                (*c).cmsg_level = libc::SOL_SOCKET;
                (*c).cmsg_type = libc::SCM_RIGHTS;
                (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(fds) as u32) as _;
                std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(c) as *mut RawFd, fds.len());
            }
            if libc::sendmsg(self.sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) < 0 {
                return Err(errno());
            }
        }
        Ok(())
    }

    /// Receives one packet (waiting at most `timeout`); `Ok(None)` is EOF. Room for 16 fds,
    /// MSG_CMSG_CLOEXEC as §2 recommends.
    pub fn recv(&self, timeout: Duration) -> std::io::Result<Option<Packet>> {
        let mut pfd = libc::pollfd {
            fd: self.sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // Safety: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::TimedOut));
        }
        let mut buf = vec![0u8; MAX_STATUS_PACKET];
        // Safety: CMSG_SPACE only computes a size from its argument; it touches no memory.
        let space = unsafe { libc::CMSG_SPACE(16 * 4) };
        let mut cbuf = vec![0u8; space as usize];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        };
        // Safety: msghdr points at live buffers; received fds are taken over exactly once.
        unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
            msg.msg_controllen = cbuf.len() as _;
            let n = libc::recvmsg(self.sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
            if n < 0 {
                return Err(errno());
            }
            let mut fds = Vec::new();
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let count = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / 4;
                    let data = libc::CMSG_DATA(c) as *const RawFd;
                    for i in 0..count {
                        fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
            if n == 0 {
                return Ok(None);
            }
            buf.truncate(n as usize);
            Ok(Some(Packet {
                bytes: buf,
                fds,
                flags: msg.msg_flags,
            }))
        }
    }
}

/// A mapped session (§2 lifecycle, §3 validation), every fd kept.
pub struct Session {
    pub conn: Conn,
    pub region_fd: OwnedFd,
    /// Welcome fd[1]: the SQ doorbell (write only).
    pub sq_wake: OwnedFd,
    /// Welcome fd[2]: the CQ doorbell (read only).
    pub cq_wake: OwnedFd,
    pub session_id: u32,
    pub worker: u32,
    pub base: *mut u8,
    pub len: usize,
    pub sq_entries: u32,
    pub cq_entries: u32,
    pub cq_array: usize,
    pub buf_offset: usize,
    pub buf_size: usize,
    sq_tail: u32,
    cq_head: u32,
}

// Safety: the mapping is only accessed through atomics and explicit copies.
unsafe impl Send for Session {}

impl Session {
    /// Hello with default sizes, Welcome, mmap, header check.
    pub fn open(path: &Path) -> Result<Session, String> {
        Self::open_with(path, 0, 0, 0)
    }

    pub fn open_with(path: &Path, sq: u32, cq: u32, buf: u64) -> Result<Session, String> {
        let conn = Conn::connect(path).map_err(|e| format!("connect: {e}"))?;
        conn.send(&hello(sq, cq, 0, buf), &[])
            .map_err(|e| format!("send Hello: {e}"))?;
        let p = conn
            .recv(Duration::from_secs(30))
            .map_err(|e| format!("recv Welcome: {e}"))?
            .ok_or("EOF instead of Welcome")?;
        if let Some((code, m)) = p.error() {
            return Err(format!("Error {code}: {m}"));
        }
        if p.kind() != kind::WELCOME || p.payload().len() != 16 || p.fds.len() != 3 {
            return Err(format!("bad Welcome: kind {} fds {}", p.kind(), p.fds.len()));
        }
        if p.flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
            return Err("Welcome truncated".into());
        }
        let pl = p.payload();
        let session_id = u32::from_le_bytes(pl[0..4].try_into().unwrap());
        let worker = u32::from_le_bytes(pl[4..8].try_into().unwrap());
        let len = u64::from_le_bytes(pl[8..16].try_into().unwrap()) as usize;
        let mut fds = p.fds.into_iter();
        let (region_fd, sq_wake, cq_wake) = (fds.next().unwrap(), fds.next().unwrap(), fds.next().unwrap());
        // Safety: mapping a memfd we received, with the length the engine gave (§3).
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                region_fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(format!("mmap: {}", errno()));
        }
        let mut s = Session {
            conn,
            region_fd,
            sq_wake,
            cq_wake,
            session_id,
            worker,
            base: base as *mut u8,
            len,
            sq_entries: 0,
            cq_entries: 0,
            cq_array: 0,
            buf_offset: 0,
            buf_size: 0,
            sq_tail: 0,
            cq_head: 0,
        };
        if s.u32_at(HDR_STATE).load(Ordering::Acquire) != STATE_READY {
            return Err("state is not Ready".into());
        }
        let r32 = |o: usize| s.u32_at(o).load(Ordering::Relaxed);
        let r64 = |o: usize| s.u64_at(o).load(Ordering::Relaxed);
        if r64(0) != REGION_MAGIC || r32(8) != LAYOUT_VERSION || r32(12) != 256 {
            return Err("bad region magic/version/header size".into());
        }
        let (sqn, cqn) = (r32(28), r32(40));
        let cq_array = align_up(SQ_ARRAY + sqn as usize * 64, 128);
        let buf_offset = align_up(cq_array + cqn as usize * 16, 4096);
        let buf_size = r64(56) as usize;
        if r32(24) as usize != SQ_CTL
            || r32(32) as usize != SQ_ARRAY
            || r32(36) as usize != CQ_CTL
            || r32(44) as usize != cq_array
            || r64(48) as usize != buf_offset
            || r64(16) as usize != len
            || buf_offset + buf_size > len
        {
            return Err("header offsets disagree with SPEC §3".into());
        }
        (s.sq_entries, s.cq_entries, s.cq_array, s.buf_offset, s.buf_size) = (sqn, cqn, cq_array, buf_offset, buf_size);
        Ok(s)
    }

    pub fn u32_at(&self, off: usize) -> &AtomicU32 {
        assert!(off + 4 <= self.len && off.is_multiple_of(4));
        // Safety: inside the mapping, aligned; the mapping lives as long as self.
        unsafe { &*(self.base.add(off) as *const AtomicU32) }
    }

    pub fn u64_at(&self, off: usize) -> &AtomicU64 {
        assert!(off + 8 <= self.len && off.is_multiple_of(8));
        // Safety: as above.
        unsafe { &*(self.base.add(off) as *const AtomicU64) }
    }

    pub fn state(&self) -> u32 {
        self.u32_at(HDR_STATE).load(Ordering::Acquire)
    }

    /// §5: the `CTL_PHASE` bit of an entry published at `index` of a ring of `entries`.
    pub fn phase(index: u32, entries: u32) -> u64 {
        if index & entries == 0 {
            CTL_PHASE
        } else {
            0
        }
    }

    /// §5/§6 producer: write SQE words 1..7, then word 0 (with the control byte: this
    /// index's phase) with release, full fence, and ring the SQ doorbell if the worker
    /// announced NEED_WAKEUP. Panics on a full SQ.
    pub fn submit(&mut self, words: [u64; 8]) {
        let head = self.u32_at(SQ_CTL + CTL_HEAD).load(Ordering::Acquire);
        assert!(self.sq_tail.wrapping_sub(head) < self.sq_entries, "SQ full");
        let slot = SQ_ARRAY + (self.sq_tail & (self.sq_entries - 1)) as usize * 64;
        for (i, w) in words.iter().enumerate().skip(1) {
            self.u64_at(slot + i * 8).store(*w, Ordering::Relaxed);
        }
        let w0 = (words[0] & !CTL_MASK) | Self::phase(self.sq_tail, self.sq_entries);
        self.sq_tail = self.sq_tail.wrapping_add(1);
        self.u64_at(slot).store(w0, Ordering::Release);
        fence(Ordering::SeqCst);
        if self.u32_at(SQ_CTL + CTL_FLAGS).load(Ordering::Relaxed) & NEED_WAKEUP != 0 {
            self.ring_sq_doorbell();
        }
    }

    /// §6: one write to the SQ doorbell; EAGAIN means a wake-up is already pending.
    pub fn ring_sq_doorbell(&self) {
        let one = 1u64.to_le_bytes();
        // Safety: writing 8 bytes from a live buffer to a fd we own.
        let n = unsafe { libc::write(self.sq_wake.as_raw_fd(), one.as_ptr() as *const libc::c_void, 8) };
        let e = errno();
        assert!(n > 0 || e.raw_os_error() == Some(libc::EAGAIN), "doorbell write: {e}");
    }

    /// Reads the CQ doorbell until it is empty (EAGAIN) or EOF.
    fn drain_cq_doorbell(&self) {
        let mut b = [0u8; 64];
        // Safety: reading into a live buffer from a fd we own.
        while unsafe { libc::read(self.cq_wake.as_raw_fd(), b.as_mut_ptr() as *mut libc::c_void, b.len()) } > 0 {}
    }

    /// Offset of the CQ slot of `index`.
    fn cq_slot(&self, index: u32) -> usize {
        self.cq_array + (index & (self.cq_entries - 1)) as usize * 16
    }

    /// §5 consumer, without sleeping: the next CQE `(user_data, result, flags)` if one is
    /// published.
    pub fn try_reap(&mut self) -> Option<(u64, i32, u32)> {
        let slot = self.cq_slot(self.cq_head);
        let w0 = self.u64_at(slot).load(Ordering::Acquire);
        if w0 & CTL_PHASE != Self::phase(self.cq_head, self.cq_entries) {
            return None;
        }
        let w1 = self.u64_at(slot + 8).load(Ordering::Relaxed);
        self.cq_head = self.cq_head.wrapping_add(1);
        self.u32_at(CQ_CTL + CTL_HEAD).store(self.cq_head, Ordering::Release);
        // §6 "the engine also sleeps on a full CQ": look at the SQ flags after making room
        // (only needed with more than cq_entries in flight; always done here).
        fence(Ordering::SeqCst);
        if self.u32_at(SQ_CTL + CTL_FLAGS).load(Ordering::Relaxed) & NEED_WAKEUP != 0 {
            self.ring_sq_doorbell();
        }
        Some((w1, (w0 >> 32) as u32 as i32, (w0 & 0xffff) as u32))
    }

    /// Announces NEED_WAKEUP on the CQ, as a sleeping client does (§6), without sleeping:
    /// the engine then rings the CQ doorbell at every publication.
    pub fn announce_cq_sleep(&self) {
        self.u32_at(CQ_CTL + CTL_FLAGS).store(NEED_WAKEUP, Ordering::SeqCst);
    }

    /// §5/§6 consumer: the next CQE `(user_data, result, flags)`, sleeping on the CQ doorbell
    /// with the NEED_WAKEUP handshake; None once `deadline` passes (a hang guard) or the
    /// session reached a terminal state with nothing left.
    pub fn reap(&mut self, deadline: Instant) -> Option<(u64, i32, u32)> {
        loop {
            let slot = self.cq_slot(self.cq_head);
            let phase = Self::phase(self.cq_head, self.cq_entries);
            if let Some(cqe) = self.try_reap() {
                return Some(cqe);
            }
            if matches!(self.state(), STATE_CLOSED | STATE_BROKEN) {
                if self.u64_at(slot).load(Ordering::Acquire) & CTL_PHASE == phase {
                    continue;
                }
                return None;
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            // §6: announce, full fence, look again; sleep only if still nothing.
            self.u32_at(CQ_CTL + CTL_FLAGS).store(NEED_WAKEUP, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            if self.u64_at(slot).load(Ordering::Acquire) & CTL_PHASE != phase {
                let mut pfd = libc::pollfd {
                    fd: self.cq_wake.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                let ms = (deadline - now).as_millis().clamp(1, 1000) as i32;
                // Safety: one valid pollfd.
                unsafe { libc::poll(&mut pfd, 1, ms) };
            }
            self.u32_at(CQ_CTL + CTL_FLAGS).store(0, Ordering::Relaxed);
            self.drain_cq_doorbell();
        }
    }

    /// Submits and reaps one entry; panics with `what` on a hang (30 s guard).
    pub fn call(&mut self, words: [u64; 8], what: &str) -> (u64, i32, u32) {
        self.submit(words);
        self.reap(Instant::now() + Duration::from_secs(30))
            .unwrap_or_else(|| panic!("{what}: no completion within 30 s"))
    }

    pub fn nop(user_data: u64) -> [u64; 8] {
        [OP_NOP, user_data, 0, 0, 0, 0, 0, 0]
    }

    pub fn fill(user_data: u64, off: usize, len: u32, byte: u8) -> [u64; 8] {
        [
            OP_FILL,
            user_data,
            off as u64,
            len as u64 | (byte as u64) << 32,
            0,
            0,
            0,
            0,
        ]
    }

    /// The buffer area (§3), as a byte slice copy of `len` bytes at `off`.
    pub fn read_buf(&self, off: usize, len: usize) -> Vec<u8> {
        assert!(off + len <= self.buf_size);
        let mut v = vec![0u8; len];
        // Safety: inside the buffer area of the mapping.
        unsafe { std::ptr::copy_nonoverlapping(self.base.add(self.buf_offset + off), v.as_mut_ptr(), len) };
        v
    }

    /// Sends Close and waits for Closed (§2 step 4); true when it came.
    pub fn close(self) -> bool {
        if self.conn.send(&packet(CONTROL_VERSION, kind::CLOSE, &[]), &[]).is_err() {
            return false;
        }
        matches!(self.conn.recv(Duration::from_secs(30)), Ok(Some(p)) if p.kind() == kind::CLOSED)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Safety: unmapping our own mapping once.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.len) };
    }
}

/// A bystander: an honest spec client doing NOP and FILL round trips, checking every
/// completion and every byte. Returns the operations done.
pub fn bystander_round(s: &mut Session, i: u64) {
    if i.is_multiple_of(2) {
        let (ud, res, fl) = s.call(Session::nop(i), "bystander NOP");
        assert_eq!((ud, res, fl), (i, 0, 0), "bystander NOP completion");
    } else {
        let off = (i as usize * 4096) % (s.buf_size - 4096);
        let byte = (i % 251) as u8;
        let (ud, res, _) = s.call(Session::fill(i, off, 4096, byte), "bystander FILL");
        assert_eq!((ud, res), (i, 4096), "bystander FILL completion");
        assert!(s.read_buf(off, 4096).iter().all(|&b| b == byte), "bystander FILL bytes");
    }
}
