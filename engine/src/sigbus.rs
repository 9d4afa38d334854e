//! Surviving a client that takes pages away from under its region.
//!
//! The region memfd is sealed against resizing (`region.rs`), but a client holding it can
//! still `fallocate(FALLOC_FL_PUNCH_HOLE)` it: the pages go away, and the engine's next touch
//! must allocate new ones. For normal pages that succeeds (a zero page); for hugetlb it comes
//! from the huge-page pool, and with the pool empty the touching thread gets SIGBUS, which
//! would kill the whole engine. Seals that forbid punching (`F_SEAL_WRITE`,
//! `F_SEAL_FUTURE_WRITE`) also forbid the client's own writable mapping, so they cannot be
//! used.
//!
//! The defence is libwayland-server's for truncated `wl_shm` pools: a process-wide SIGBUS
//! handler that, for a fault inside a registered region, maps anonymous memory over the whole
//! region (`MAP_FIXED`, so the faulting access is retried and succeeds on private zero pages)
//! and marks the region lost. The session's worker then ends the session; the engine never
//! touches that client's memfd pages again (the anonymous memory is unmapped with the
//! region). Faults anywhere else go to the handler that was installed before (Rust's stack
//! overflow reporter, or the default action), so real bugs still crash.
//!
//! Any thread may fault (a worker copying for FILL/ECHO, UCX copying out of a region, the
//! control thread's heartbeat store), so the handler looks regions up in a fixed table of
//! atomics rather than per thread state, using only async-signal-safe operations: atomic
//! loads and stores, and raw `mmap`/`sigaction` system calls (raw, so UCX's memory hooks,
//! which take locks, never run inside the handler).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Regions that can be guarded at once: above `control.max-sessions`' practical range plus
/// the start-up probe. A full table refuses the region (the session), never leaves one
/// unguarded.
pub const SLOTS: usize = 16384;

struct Slot {
    /// Taken by a region (compare-exchange false -> true by `guard`; reset by `Drop`).
    /// Only registration and release use it; the handler never looks at it.
    claimed: AtomicBool,
    /// Region start, 0 while the slot guards nothing. SYNC POINT: the Release store in
    /// `guard` (after `len` and `lost`) pairs with the handler's Acquire load, so a handler
    /// that sees the start also sees that region's length and a cleared `lost`.
    start: AtomicUsize,
    /// Region length in bytes; written before `start` is published (see above).
    len: AtomicUsize,
    /// Set (Release) by the handler after it replaced the mapping; read (Acquire) by the
    /// worker on every pass, so a worker that sees it also sees the new mapping in place.
    lost: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Slot = Slot {
    claimed: AtomicBool::new(false),
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    lost: AtomicBool::new(false),
};

static TABLE: [Slot; SLOTS] = [EMPTY; SLOTS];

/// Regions replaced since start (a metric). Relaxed: a plain counter.
static REGIONS_LOST: AtomicU64 = AtomicU64::new(0);

/// The SIGBUS action found at install time, which faults outside regions are passed to.
/// Set once before our handler is installed (so the handler always finds it).
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

/// Why a region cannot be guarded.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("all {SLOTS} region guard slots are in use; lower control.max-sessions")]
    TableFull,
    #[error("cannot install the SIGBUS handler: {0}")]
    Install(std::io::Error),
}

type SigactionFn = unsafe extern "C" fn(libc::c_int, *const libc::sigaction, *mut libc::sigaction) -> libc::c_int;

/// The C library's own `sigaction`. UCX built with its default options defines a `sigaction`
/// of its own that silently ignores new handlers for the signals it reports errors on (SIGBUS
/// among them), so the symbol this binary links to may not install anything. Resolved once
/// by `install`; the handler reads it when chaining.
static REAL_SIGACTION: OnceLock<SigactionFn> = OnceLock::new();

fn real_sigaction() -> SigactionFn {
    *REAL_SIGACTION.get_or_init(|| {
        // Safety: dlopen with RTLD_NOLOAD only finds the already loaded C library; dlsym of
        // "sigaction" in it is that function, whose signature is SigactionFn.
        unsafe {
            let lib = libc::dlopen(c"libc.so.6".as_ptr(), libc::RTLD_LAZY | libc::RTLD_NOLOAD);
            let sym = if lib.is_null() {
                std::ptr::null_mut()
            } else {
                libc::dlsym(lib, c"sigaction".as_ptr())
            };
            if sym.is_null() {
                libc::sigaction as SigactionFn
            } else {
                std::mem::transmute::<*mut libc::c_void, SigactionFn>(sym)
            }
        }
    })
}

/// Installs the handler (idempotent). Call once at engine start, before any region exists.
pub fn install() -> Result<(), GuardError> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    let r = INSTALLED.get_or_init(|| {
        let sigaction = real_sigaction();
        // Safety: sigaction with a zeroed struct for the old action and a fully initialised
        // new one; `on_sigbus` has the SA_SIGINFO signature.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if sigaction(libc::SIGBUS, std::ptr::null(), &mut old) != 0 {
                return Err(std::io::Error::last_os_error().to_string());
            }
            let _ = PREVIOUS.set(old);
            let mut new: libc::sigaction = std::mem::zeroed();
            new.sa_sigaction = on_sigbus as *const () as usize;
            new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut new.sa_mask);
            if sigaction(libc::SIGBUS, &new, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error().to_string());
            }
            // Read back: an interposed sigaction may have reported success without installing.
            let mut now: libc::sigaction = std::mem::zeroed();
            sigaction(libc::SIGBUS, std::ptr::null(), &mut now);
            if now.sa_sigaction != on_sigbus as *const () as usize {
                return Err("another SIGBUS handler is in place after installing ours".into());
            }
        }
        Ok(())
    });
    r.clone().map_err(|e| GuardError::Install(std::io::Error::other(e)))
}

/// Regions lost since start (each counted once, however many threads faulted on it).
pub fn regions_lost() -> u64 {
    REGIONS_LOST.load(Ordering::Relaxed)
}

/// A region in the table; dropping it removes the entry. Drop it before unmapping.
pub struct Guard {
    slot: usize,
}

impl Guard {
    /// Guards `[start, start + len)`, a mapping the caller owns and keeps until the guard is
    /// dropped.
    pub fn new(start: *mut u8, len: usize) -> Result<Guard, GuardError> {
        for (i, s) in TABLE.iter().enumerate() {
            if s.claimed
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                s.len.store(len, Ordering::Relaxed);
                s.lost.store(false, Ordering::Relaxed);
                // SYNC POINT: Release pairs with the handler's Acquire load of `start`.
                s.start.store(start as usize, Ordering::Release);
                return Ok(Guard { slot: i });
            }
        }
        Err(GuardError::TableFull)
    }

    /// Whether the handler replaced this region's memory: its session must end.
    pub fn lost(&self) -> bool {
        // SYNC POINT: Acquire pairs with the handler's Release store.
        TABLE[self.slot].lost.load(Ordering::Acquire)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let s = &TABLE[self.slot];
        // The handler stops matching this range from here on (the caller unmaps it next).
        s.start.store(0, Ordering::Release);
        // SYNC POINT: Release pairs with the Acquire claim in `Guard::new`.
        s.claimed.store(false, Ordering::Release);
    }
}

/// The SIGBUS handler. Only async-signal-safe work: atomics, raw system calls, errno saved.
extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // Safety: the kernel passes a valid siginfo for SA_SIGINFO handlers; errno is this
    // thread's and is restored before returning so the interrupted code never sees ours.
    unsafe {
        let saved_errno = *libc::__errno_location();
        let addr = (*info).si_addr() as usize;
        if !replace_region_at(addr) {
            chain(sig, info, ctx);
        }
        *libc::__errno_location() = saved_errno;
    }
}

/// Maps anonymous memory over the guarded region holding `addr`; false if none holds it (or
/// the mapping could not be replaced, which leaves the fault to the previous handler).
fn replace_region_at(addr: usize) -> bool {
    if addr == 0 {
        return false;
    }
    for s in TABLE.iter() {
        // SYNC POINT: Acquire pairs with the Release store in `Guard::new`.
        let start = s.start.load(Ordering::Acquire);
        if start == 0 {
            continue;
        }
        let len = s.len.load(Ordering::Relaxed);
        if addr < start || addr - start >= len {
            continue;
        }
        // Safety: [start, start + len) is a mapping the region owns and keeps until its guard
        // is dropped (it is still guarded: `start` was non-zero). Replacing it with private
        // anonymous memory of the same size keeps every pointer into it valid; the memfd
        // pages are no longer mapped, so no later access can fault on them. A raw syscall so
        // that no library hook on mmap runs here.
        let r = unsafe {
            libc::syscall(
                libc::SYS_mmap,
                start,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1i64,
                0i64,
            )
        };
        if r as usize != start {
            return false;
        }
        // SYNC POINT: the swap's Release pairs with the Acquire load in `Guard::lost`.
        // Counted once per region: two threads (the worker polling the rings, the control
        // thread storing the heartbeat) may both fault on it before either has replaced it.
        if !s.lost.swap(true, Ordering::AcqRel) {
            REGIONS_LOST.fetch_add(1, Ordering::Relaxed);
        }
        return true;
    }
    false
}

/// Hands a fault outside every region to the action that was there before ours: a handler is
/// called as it would have been; the default action (or ignore, which the kernel overrides
/// for faults) is restored so that the faulting access, retried on return, kills the process
/// as it would have without us. A SIGBUS sent by kill() is raised again for the same effect.
///
/// # Safety
/// Called only from `on_sigbus` with the arguments it received.
unsafe fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let Some(prev) = PREVIOUS.get() else {
        restore_default_and_reraise(info);
        return;
    };
    match prev.sa_sigaction {
        libc::SIG_DFL | libc::SIG_IGN => {
            // Safety: reinstalling the saved action, a valid sigaction struct (sigaction is
            // async-signal-safe; `install` resolved the function already).
            real_sigaction()(libc::SIGBUS, prev, std::ptr::null_mut());
            reraise_if_sent(info);
        }
        f if prev.sa_flags & libc::SA_SIGINFO != 0 => {
            // Safety: an SA_SIGINFO handler has this signature.
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) = std::mem::transmute(f);
            f(sig, info, ctx);
        }
        f => {
            // Safety: a plain handler has this signature.
            let f: extern "C" fn(libc::c_int) = std::mem::transmute(f);
            f(sig);
        }
    }
}

/// # Safety
/// As for `chain`.
unsafe fn restore_default_and_reraise(info: *mut libc::siginfo_t) {
    let mut dfl: libc::sigaction = std::mem::zeroed();
    dfl.sa_sigaction = libc::SIG_DFL;
    real_sigaction()(libc::SIGBUS, &dfl, std::ptr::null_mut());
    reraise_if_sent(info);
}

/// A SIGBUS from kill() or raise() has no faulting access to retry: raise it again (it is
/// delivered, with the restored action, when the handler returns).
///
/// # Safety
/// `info` is the handler's siginfo.
unsafe fn reraise_if_sent(info: *mut libc::siginfo_t) {
    if (*info).si_code <= 0 {
        libc::raise(libc::SIGBUS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `child` in a forked process and returns its wait status. The child only makes
    /// system calls and atomic operations (it is forked from a multi-threaded test binary).
    fn in_child(child: fn() -> i32) -> i32 {
        install().expect("install the SIGBUS handler");
        // Safety: fork, then only async-signal-safe work in the child, which ends in _exit.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0, "fork");
            if pid == 0 {
                // Hang guard: a handler that swallowed the fault would retry it forever.
                libc::alarm(20);
                libc::_exit(child());
            }
            let mut status = 0;
            assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
            status
        }
    }

    /// A two-page shared mapping of a memfd that is then truncated to 0 (the fault the
    /// handler exists for: no page can back the mapping any more).
    fn truncated_mapping() -> *mut u8 {
        // Safety: plain system calls on objects this function creates.
        unsafe {
            let fd = libc::memfd_create(c"sigbus-test".as_ptr(), 0);
            assert!(fd >= 0);
            assert_eq!(libc::ftruncate(fd, 8192), 0);
            let p = libc::mmap(
                std::ptr::null_mut(),
                8192,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            assert_eq!(libc::ftruncate(fd, 0), 0);
            p as *mut u8
        }
    }

    #[test]
    fn a_fault_inside_a_guarded_region_is_absorbed_and_reported() {
        let status = in_child(|| {
            let p = truncated_mapping();
            let Ok(guard) = Guard::new(p, 8192) else { return 2 };
            if guard.lost() {
                return 3;
            }
            // Safety: inside the mapping; the fault this causes is the point of the test.
            let v = unsafe { std::ptr::read_volatile(p.add(4096)) };
            // Safety: as above, after the handler replaced the mapping.
            unsafe { std::ptr::write_volatile(p, 7) };
            if v == 0 && guard.lost() && regions_lost() == 1 {
                0
            } else {
                4
            }
        });
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child status {status:#x}"
        );
    }

    #[test]
    fn a_region_two_threads_fault_on_is_counted_once() {
        let status = in_child(|| {
            let p = truncated_mapping();
            let Ok(guard) = Guard::new(p, 8192) else { return 2 };
            // What two threads faulting before either replaced the mapping do: both replace.
            if !replace_region_at(p as usize + 4096) || !replace_region_at(p as usize) {
                return 3;
            }
            if guard.lost() && regions_lost() == 1 {
                0
            } else {
                4
            }
        });
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child status {status:#x}"
        );
    }

    #[test]
    fn a_fault_outside_every_region_still_kills_the_process() {
        let status = in_child(|| {
            let p = truncated_mapping();
            // Safety: the fault this causes must kill this (child) process.
            unsafe { std::ptr::read_volatile(p) as i32 + 10 }
        });
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGBUS,
            "child status {status:#x}: a fault outside the regions was swallowed"
        );
    }
}
