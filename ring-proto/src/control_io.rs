//! Sending and receiving control messages, with their file descriptors, over a
//! `SOCK_SEQPACKET` Unix socket. Used by the engine and the Rust client alike.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::cmsg_space;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use crate::control::{DecodeError, Message, MAX_MESSAGE, MAX_STATUS_PACKET, WELCOME_FDS};

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
    let bytes = msg.encode();
    let iov = [IoSlice::new(&bytes)];
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsg };
    loop {
        match sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Receives one message and the descriptors that came with it (owned: closed on drop).
pub fn recv(sock: BorrowedFd<'_>) -> Result<(Message, Vec<OwnedFd>), RecvError> {
    recv_into(sock, &mut [0u8; MAX_MESSAGE])
}

/// [`recv`] for packets up to [`MAX_STATUS_PACKET`] (a status client's receive).
pub fn recv_large(sock: BorrowedFd<'_>) -> Result<(Message, Vec<OwnedFd>), RecvError> {
    recv_into(sock, &mut vec![0u8; MAX_STATUS_PACKET])
}

fn recv_into(sock: BorrowedFd<'_>, buf: &mut [u8]) -> Result<(Message, Vec<OwnedFd>), RecvError> {
    let mut cbuf = cmsg_space!([RawFd; WELCOME_FDS]);
    let (len, fds, truncated) = loop {
        let mut iov = [IoSliceMut::new(&mut *buf)];
        match recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut cbuf), MsgFlags::MSG_CMSG_CLOEXEC) {
            Ok(m) => {
                let mut fds = Vec::new();
                for c in m.cmsgs().map_err(|e| RecvError::Io(e.into()))? {
                    if let ControlMessageOwned::ScmRights(list) = c {
                        // Safety: the kernel just installed these descriptors in our table
                        // for us; nothing else owns them.
                        fds.extend(list.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
                    }
                }
                let truncated = m.flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
                break (m.bytes, fds, truncated);
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(RecvError::Io(e.into())),
        }
    };
    if truncated {
        return Err(RecvError::Truncated);
    }
    if len == 0 {
        return Err(RecvError::Eof);
    }
    let msg = Message::decode(&buf[..len]).map_err(RecvError::Decode)?;
    Ok((msg, fds))
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
