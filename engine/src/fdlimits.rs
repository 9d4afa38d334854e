//! File-descriptor hygiene of the control thread: the process limit raised at start, and a
//! reserve descriptor that lets an exhausted table shed connections instead of spinning.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Raises the soft RLIMIT_NOFILE to the hard limit (each session costs the engine 4
/// descriptors) and logs the result.
pub fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // Safety: getrlimit writes one rlimit through a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot read RLIMIT_NOFILE");
        return;
    }
    let before = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // Safety: setrlimit reads one rlimit through a valid pointer.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            let error = std::io::Error::last_os_error();
            tracing::warn!(soft = before, hard = lim.rlim_max, %error, "cannot raise RLIMIT_NOFILE");
            return;
        }
    }
    tracing::info!(
        before,
        soft = lim.rlim_cur,
        hard = lim.rlim_max,
        "open file limit (RLIMIT_NOFILE)"
    );
}

/// One descriptor held back (`/dev/null`). When `accept` fails with EMFILE/ENFILE the
/// listener stays readable and a poll loop would spin on it forever while clients wait; with
/// the reserve released, the waiting connection is accepted and closed at once (the client
/// sees EOF, not a hang) and the reserve taken again.
pub struct FdReserve(Option<OwnedFd>);

impl FdReserve {
    pub fn new() -> Self {
        Self(Self::open())
    }

    fn open() -> Option<OwnedFd> {
        std::fs::File::open("/dev/null").ok().map(OwnedFd::from)
    }

    /// Call after accept failed with EMFILE/ENFILE: sheds one waiting connection using the
    /// reserve. True if one was shed (the caller may try again).
    pub fn shed_one(&mut self, listener: BorrowedFd<'_>) -> bool {
        if self.0.take().is_none() {
            return false;
        }
        // Safety: accept4 with null address pointers; a non-negative result is a new fd we own.
        let raw = unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        let shed = raw >= 0;
        if shed {
            // Safety: as above; dropping it closes the connection.
            drop(unsafe { OwnedFd::from_raw_fd(raw) });
        }
        self.0 = Self::open();
        shed
    }
}
