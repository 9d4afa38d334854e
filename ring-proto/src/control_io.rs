//! Sending and receiving control messages, with their file descriptors, over a
//! `SOCK_SEQPACKET` Unix socket. Used by the engine and the Rust client alike.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::libc;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

use crate::control::{DecodeError, Message, MAX_MESSAGE, MAX_STATUS_PACKET};

/// Why a control message could not be received.
#[derive(Debug)]
pub enum RecvError {
    /// The other side closed the connection (or died).
    Eof,
    Io(io::Error),
    Decode(DecodeError),
    /// The packet did not fit [`MAX_MESSAGE`] or its descriptors were cut off.
    Truncated,
}

impl core::fmt::Display for RecvError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Eof => write!(f, "control connection closed by the other side"),
            Self::Io(e) => write!(f, "control socket: {e}"),
            Self::Decode(e) => write!(f, "{e}"),
            Self::Truncated => write!(f, "control packet or its file descriptors were truncated"),
        }
    }
}

impl std::error::Error for RecvError {}

/// Sends one message, with `fds` attached as SCM_RIGHTS when non-empty.
pub fn send(sock: BorrowedFd<'_>, msg: &Message, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    send_flags(sock, msg, fds, MsgFlags::MSG_NOSIGNAL)
}

fn send_flags(sock: BorrowedFd<'_>, msg: &Message, fds: &[BorrowedFd<'_>], flags: MsgFlags) -> io::Result<()> {
    let bytes = msg.encode();
    let iov = [IoSlice::new(&bytes)];
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsg };
    loop {
        match sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, flags, None) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Receives one message and the descriptors that came with it (owned: closed on drop).
pub fn recv(sock: BorrowedFd<'_>) -> Result<(Message, Vec<OwnedFd>), RecvError> {
    recv_into(sock, &mut [0u8; MAX_MESSAGE], 0)
}

/// [`recv`] for packets up to [`MAX_STATUS_PACKET`] (a status client's receive).
pub fn recv_large(sock: BorrowedFd<'_>) -> Result<(Message, Vec<OwnedFd>), RecvError> {
    recv_into(sock, &mut vec![0u8; MAX_STATUS_PACKET], 0)
}

/// Room for every descriptor one packet can carry: Linux caps SCM_RIGHTS at 253 fds per
/// message (SCM_MAX_FD), plus a credentials message. A receiver with less room gets
/// MSG_CTRUNC and loses the descriptors that did not fit, but must still close the ones that
/// did: an engine that dropped them on the floor leaked them (a hostile client filled its fd
/// table that way).
const CMSG_ROOM: usize = 256 * 4 + 64;

fn recv_into(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    recv_flags: libc::c_int,
) -> Result<(Message, Vec<OwnedFd>), RecvError> {
    let (len, fds, flags) = recv_raw(sock, buf, recv_flags)?;
    if flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
        // `fds` is dropped here: every descriptor that came is closed.
        return Err(RecvError::Truncated);
    }
    if len == 0 {
        return Err(RecvError::Eof);
    }
    let msg = Message::decode(&buf[..len]).map_err(RecvError::Decode)?;
    Ok((msg, fds))
}

/// [`recv`] that never blocks, whatever the socket's file status flags (MSG_DONTWAIT): for
/// the engine's control thread, which must never wait on a client. `WouldBlock` when no
/// packet is queued.
pub fn recv_nonblocking(sock: BorrowedFd<'_>) -> Result<(Message, Vec<OwnedFd>), RecvError> {
    recv_into(sock, &mut [0u8; MAX_MESSAGE], libc::MSG_DONTWAIT)
}

/// One recvmsg with MSG_CMSG_CLOEXEC: (bytes, every descriptor that arrived, msg_flags).
/// The descriptors are owned from the moment the kernel installed them, whatever else went
/// wrong, so none can leak.
fn recv_raw(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    extra: libc::c_int,
) -> Result<(usize, Vec<OwnedFd>, libc::c_int), RecvError> {
    // u64 elements keep the control buffer aligned for cmsghdr.
    let mut cbuf = [0u64; CMSG_ROOM / 8];
    loop {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        };
        // Safety: an all-zero msghdr is valid; every pointer set below points at a live
        // buffer of the stated length for the duration of the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
        // Safety: as above.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC | extra) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(RecvError::Io(e));
        }
        let mut fds = Vec::new();
        // Safety: the CMSG_* macros walk the control buffer the kernel just filled (bounded by
        // msg_controllen); each SCM_RIGHTS payload is an array of descriptors installed in our
        // table for us, taken over exactly once.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let bytes = ((*c).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
                    let data = libc::CMSG_DATA(c) as *const RawFd;
                    for i in 0..bytes / std::mem::size_of::<RawFd>() {
                        fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        return Ok((n as usize, fds, msg.msg_flags));
    }
}

/// Sends one message without ever blocking (MSG_DONTWAIT, whatever the socket's flags):
/// `WouldBlock` when the peer's receive queue is full (a client that does not read).
pub fn send_nonblocking(sock: BorrowedFd<'_>, msg: &Message, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    send_flags(sock, msg, fds, MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT)
}

/// A session doorbell: a pipe whose two ends are separate open file descriptions, so the
/// side that hands one end to a client keeps full control of its own end's flags. Both ends
/// are non-blocking and close-on-exec. Returns (read end, write end).
pub fn new_doorbell() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC).map_err(Into::into)
}

/// Rings a doorbell: one byte into its write end. A full pipe (EAGAIN) already holds a wake-up
/// and a closed read end (EPIPE; SIGPIPE is ignored by Rust programs) has nobody to wake:
/// both count as done.
pub fn ring_doorbell(write_end: BorrowedFd<'_>) -> io::Result<()> {
    loop {
        match nix::unistd::write(write_end, &[1u8]) {
            Ok(_) | Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EPIPE) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// What [`drain_doorbell`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Doorbell {
    /// Nothing (more) pending.
    Empty,
    /// At least one wake-up was pending (now consumed).
    Rang,
    /// The other end is closed: nobody will ring again.
    Hangup,
}

/// Consumes pending wake-ups from a doorbell's (non-blocking) read end. Reads at most 64 KiB
/// (a full pipe), so a writer that never stops cannot keep the caller here.
pub fn drain_doorbell(read_end: BorrowedFd<'_>) -> io::Result<Doorbell> {
    let mut b = [0u8; 4096];
    let mut rang = false;
    for _ in 0..16 {
        match nix::unistd::read(read_end.as_raw_fd(), &mut b) {
            Ok(0) => return Ok(Doorbell::Hangup),
            Ok(n) if n < b.len() => return Ok(Doorbell::Rang),
            Ok(_) => rang = true,
            Err(nix::errno::Errno::EAGAIN) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(if rang { Doorbell::Rang } else { Doorbell::Empty })
}

/// Wakes whoever sleeps on an eventfd (adds 1 to its counter). Never blocks in practice: the
/// counter would have to reach 2^64-1.
pub fn signal_eventfd(fd: BorrowedFd<'_>) -> io::Result<()> {
    loop {
        match nix::unistd::write(fd, &1u64.to_ne_bytes()) {
            Ok(_) | Err(nix::errno::Errno::EAGAIN) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Resets a non-blocking eventfd's counter; returns the signals it had collected.
pub fn drain_eventfd(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut b = [0u8; 8];
    loop {
        match nix::unistd::read(fd.as_raw_fd(), &mut b) {
            Ok(_) => return Ok(u64::from_ne_bytes(b)),
            Err(nix::errno::Errno::EAGAIN) => return Ok(0),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// A new non-blocking, close-on-exec eventfd (the wake-up primitive of both ring directions).
pub fn new_eventfd() -> io::Result<OwnedFd> {
    // Safety: eventfd takes no pointers; a non-negative result is a new descriptor we own.
    let fd = unsafe { nix::libc::eventfd(0, nix::libc::EFD_NONBLOCK | nix::libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // Safety: as above, nothing else owns `fd`.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
