//! The control socket and the signals: bound and blocked by `main` before the control thread
//! starts.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::socket::{self, AddressFamily, Backlog, SockFlag, SockType, UnixAddr};

use crate::config::Config;

use super::StartError;

/// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread (and every thread it spawns
/// afterwards) so they arrive only through the control thread's signalfd.
pub fn block_signals() -> Result<SigSet, StartError> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.add(Signal::SIGHUP);
    set.thread_block().map_err(|e| StartError::Signals(e.into()))?;
    Ok(set)
}

/// Binds the control socket: owner-only (0600), or 0660 for `socket-group`.
pub fn bind_socket(cfg: &Config) -> Result<(OwnedFd, PathBuf), StartError> {
    let path = cfg.socket_path();
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|source| StartError::SocketDir {
                path: dir.into(),
                source,
            })?;
            // A directory we created for the socket is ours alone unless a group shares it.
            let mode = if cfg.control.socket_group.is_some() {
                0o750
            } else {
                0o700
            };
            set_mode(dir, mode).map_err(|source| StartError::SocketDir {
                path: dir.into(),
                source,
            })?;
        }
    }
    if path.exists() {
        // A socket file left by a dead engine is removed; a live one is not ours to take.
        if std::os::unix::net::UnixStream::connect(&path).is_ok() || seqpacket_connects(&path) {
            return Err(StartError::AlreadyRunning(path));
        }
        let _ = std::fs::remove_file(&path);
    }
    let bind_err = |e: nix::errno::Errno| StartError::Bind {
        path: path.clone(),
        source: e.into(),
    };
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(bind_err)?;
    let addr = UnixAddr::new(&path).map_err(bind_err)?;
    socket::bind(fd.as_raw_fd(), &addr).map_err(bind_err)?;
    let io_err = |source| StartError::Bind {
        path: path.clone(),
        source,
    };
    match &cfg.control.socket_group {
        Some(group) => {
            let g = nix::unistd::Group::from_name(group)
                .ok()
                .flatten()
                .ok_or_else(|| StartError::NoSuchGroup(group.clone()))?;
            nix::unistd::chown(&path, None, Some(g.gid)).map_err(|e| io_err(e.into()))?;
            set_mode(&path, 0o660).map_err(io_err)?;
        }
        None => set_mode(&path, 0o600).map_err(io_err)?,
    }
    socket::listen(&fd, Backlog::new(128).expect("valid backlog")).map_err(bind_err)?;
    Ok((fd, path))
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

fn seqpacket_connects(path: &Path) -> bool {
    let Ok(fd) = socket::socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None) else {
        return false;
    };
    UnixAddr::new(path).is_ok_and(|a| socket::connect(fd.as_raw_fd(), &a).is_ok())
}
