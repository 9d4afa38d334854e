//! Accepting control connections and answering their first message: the allow-lists, a
//! `Hello` that becomes a session (the region memfd and the client's doorbell ends passed with
//! the `Welcome`), or an operator's `Status` request.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use nix::sys::socket::{self, sockopt, SockFlag};
use ring_proto::control::{ControlErrorCode, Message, CONTROL_VERSION};
use ring_proto::control_io::{self, RecvError};
use ring_proto::{RegionLayout, LAYOUT_VERSION};

use crate::region::Region;
use crate::session::SessionShared;
use crate::worker::Command;

use super::{monotonic_ms, Conn, ControlServer, Lease, MAX_PENDING};

impl ControlServer {
    pub(super) fn accept_all(&mut self) {
        let listener = self.listener.as_ref().expect("listener lives until shutdown");
        loop {
            match socket::accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK) {
                Ok(raw) => {
                    // Safety: accept4 returned a new descriptor that nothing else owns.
                    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
                    let creds = socket::getsockopt(&fd, sockopt::PeerCredentials).ok();
                    let client_pid = creds.map_or(0, |c| c.pid());
                    // A client that the allow-lists refuse is answered after its first message
                    // (in handle_hello): refusing at once would close the socket under its
                    // Hello, and the reset could swallow the explanation.
                    let refused = self.allowed(creds.map(|c| (c.uid(), c.gid()))).err();
                    if self.pending.len() >= MAX_PENDING {
                        // Close the oldest that has said nothing: one whose first message is
                        // already waiting (a Hello, a status request) is served by this pass's
                        // poll instead. With every one of them waiting to be read, the oldest.
                        let silent = |c: &Conn| !readable(c.fd().as_fd());
                        let oldest = (0..self.pending.len())
                            .filter(|&i| silent(&self.pending[i]))
                            .min_by_key(|&i| self.pending[i].lease.last_seen)
                            .or_else(|| (0..self.pending.len()).min_by_key(|&i| self.pending[i].lease.last_seen))
                            .expect("pending is full");
                        let old = self.pending.swap_remove(oldest);
                        tracing::warn!(
                            client_pid = old.client_pid,
                            max = MAX_PENDING,
                            "too many connections without Hello; closed the oldest silent one"
                        );
                    }
                    self.pending.push(Conn {
                        fd: Some(fd),
                        client_pid,
                        session: None,
                        closing: false,
                        lease: Lease::new(),
                        refused,
                        peers: Vec::new(),
                    });
                }
                Err(nix::errno::Errno::EAGAIN) => return,
                Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::ECONNABORTED) => continue,
                Err(e @ (nix::errno::Errno::EMFILE | nix::errno::Errno::ENFILE)) => {
                    // Out of descriptors: turn the waiting client away (EOF) with the reserve
                    // rather than leave it hanging and this loop spinning on the listener.
                    tracing::warn!(error = %e, sessions = self.conns.len(), "accept failed: out of file descriptors; connection closed (raise LimitNOFILE)");
                    if !self.reserve.shed_one(listener.as_fd()) {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    return;
                }
            }
        }
    }

    /// Checks a client's credentials (SO_PEERCRED) against the allow-lists.
    fn allowed(&self, creds: Option<(u32, u32)>) -> Result<(), String> {
        let c = &self.cfg.control;
        if c.allow_users.is_empty() && c.allow_groups.is_empty() {
            return Ok(());
        }
        let Some((uid, gid)) = creds else {
            return Err("the client's credentials could not be read".into());
        };
        let user_ok = c.allow_users.iter().any(|u| {
            nix::unistd::User::from_name(u)
                .ok()
                .flatten()
                .is_some_and(|u| u.uid.as_raw() == uid)
        });
        let group_ok = c.allow_groups.iter().any(|g| {
            nix::unistd::Group::from_name(g).ok().flatten().is_some_and(|g| {
                g.gid.as_raw() == gid
                    || nix::unistd::User::from_uid(uid.into())
                        .ok()
                        .flatten()
                        .is_some_and(|u| g.mem.contains(&u.name))
            })
        });
        if user_ok || group_ok {
            return Ok(());
        }
        Err(format!(
            "uid {uid} (gid {gid}) is not in control.allow-users or control.allow-groups of this engine"
        ))
    }

    pub(super) fn refuse(conn: &Conn, code: ControlErrorCode, message: String) {
        tracing::info!(client_pid = conn.client_pid, ?code, %message, "session refused");
        let _ = control_io::send_nonblocking(
            conn.fd().as_fd(),
            &Message::Error {
                code: code as u32,
                message,
            },
            &[],
        );
    }

    pub(super) fn handle_hello(&mut self, mut conn: Conn) {
        // Any descriptors a client sends are closed on the spot (the engine never takes any).
        let msg = match control_io::recv_nonblocking(conn.fd().as_fd()) {
            Ok((m, _fds)) => m,
            Err(RecvError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => return self.pending.push(conn),
            Err(RecvError::Eof) | Err(RecvError::Io(_)) => return,
            Err(RecvError::Decode(ring_proto::control::DecodeError::Version { found, expected })) => {
                return Self::refuse(
                    &conn,
                    ControlErrorCode::VersionMismatch,
                    format!("control protocol version {found} is not supported; this engine speaks {expected}"),
                )
            }
            Err(e) => return Self::refuse(&conn, ControlErrorCode::Malformed, e.to_string()),
        };
        if let Some(why) = &conn.refused {
            tracing::warn!(client_pid = conn.client_pid, reason = %why, "client refused by control.allow-users / allow-groups");
            return Self::refuse(&conn, ControlErrorCode::PermissionDenied, why.clone());
        }
        if msg == Message::Status {
            // An operator's status request: answered, then the connection is dropped.
            let fd = conn.fd.take().expect("pending connections are open");
            let mut reply = crate::status::StatusReply::new(fd, &self.registry);
            if !reply.progress(Instant::now()) {
                self.status_out.push(reply);
            }
            return;
        }
        let Message::Hello {
            layout_version,
            sq_entries,
            cq_entries,
            buf_size,
        } = msg
        else {
            return Self::refuse(
                &conn,
                ControlErrorCode::Malformed,
                format!("expected Hello first, got {msg:?}"),
            );
        };
        if layout_version != LAYOUT_VERSION {
            return Self::refuse(
                &conn,
                ControlErrorCode::VersionMismatch,
                format!("region layout version {layout_version} is not supported; this engine speaks {LAYOUT_VERSION} (control {CONTROL_VERSION})"),
            );
        }
        if self.conns.len() >= self.cfg.control.max_sessions as usize {
            return Self::refuse(
                &conn,
                ControlErrorCode::TooManySessions,
                format!("engine is at control.max-sessions = {}", self.cfg.control.max_sessions),
            );
        }
        let layout = match self.session_layout(sq_entries, cq_entries, buf_size) {
            Ok(l) => l,
            Err(m) => return Self::refuse(&conn, ControlErrorCode::BadRequest, m),
        };
        let id = self.next_session;
        self.next_session = self.next_session.wrapping_add(1).max(1);
        let region = match Region::create(layout, self.cfg.memory.hugepages, &format!("seaweed-ring-s{id}")) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(session = id, error = %e, "region creation failed");
                return Self::refuse(&conn, ControlErrorCode::RegionUnavailable, e.to_string());
            }
        };
        region.initialize(self.pid, id, self.epoch, self.cfg.sessions.lease_ms);
        region.live().engine_heartbeat.store(monotonic_ms(), Ordering::Relaxed);
        let doorbells = control_io::new_doorbell().and_then(|sq| Ok((sq, control_io::new_doorbell()?)));
        let ((sq_doorbell, sq_client_end), (cq_client_end, cq_doorbell)) = match doorbells {
            Ok(d) => d,
            Err(e) => {
                return Self::refuse(
                    &conn,
                    ControlErrorCode::RegionUnavailable,
                    format!("doorbell pipes: {e}"),
                )
            }
        };
        let worker = (0..self.load.len())
            .min_by_key(|&w| self.load[w])
            .expect("at least one worker");
        let backing = region.backing();
        let shared = Arc::new(SessionShared {
            id,
            worker,
            ucx_registration: Default::default(),
            region,
            cq_doorbell,
            sq_doorbell,
            stats: Default::default(),
            client_pid: conn.client_pid,
            lookups: Default::default(),
        });
        let welcome = Message::Welcome {
            session_id: id,
            worker: worker as u32,
            region_size: shared.region.len() as u64,
        };
        // The client's ends of its doorbells are closed here once sent (dropped at the end of
        // this function): the engine keeps only its own ends.
        let fds: [BorrowedFd<'_>; 3] = [shared.region.fd(), sq_client_end.as_fd(), cq_client_end.as_fd()];
        // Logged before the client can use the session, so that "session opened" always
        // precedes anything the session does (tests and operators count these lines).
        tracing::info!(
            session = id,
            client_pid = conn.client_pid,
            worker,
            backing = backing.name(),
            sq = layout.sq_entries,
            cq = layout.cq_entries,
            buffer = layout.buf_size,
            "session opened"
        );
        if let Err(e) = control_io::send_nonblocking(conn.fd().as_fd(), &welcome, &fds) {
            tracing::info!(session = id, error = %e, "session closed: the client left during the handshake");
            return;
        }
        self.workers[worker].send(Command::Add(shared.clone()));
        self.load[worker] += 1;
        self.registry.session_opened(shared.clone());
        self.conns.insert(
            id,
            Conn {
                session: Some(shared),
                ..conn
            },
        );
    }

    fn session_layout(&self, sq: u32, cq: u32, buf: u64) -> Result<RegionLayout, String> {
        let m = &self.cfg.memory;
        let sq = if sq == 0 { m.sq_entries } else { sq };
        let cq = if cq == 0 { m.cq_entries } else { cq };
        let buf = if buf == 0 { m.buffer_bytes } else { buf };
        if sq > m.max_sq_entries || cq > m.max_cq_entries || buf > m.max_buffer_bytes {
            return Err(format!(
                "asked for sq={sq} cq={cq} buffer={buf}; this engine allows at most sq={} cq={} buffer={} (memory.max-*)",
                m.max_sq_entries, m.max_cq_entries, m.max_buffer_bytes
            ));
        }
        RegionLayout::new(sq, cq, buf).map_err(|e| e.to_string())
    }
}

/// Whether a connection has bytes (or its EOF) waiting to be read: a poll that does not wait.
fn readable(fd: BorrowedFd<'_>) -> bool {
    let mut p = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
    matches!(nix::poll::poll(&mut p, nix::poll::PollTimeout::ZERO), Ok(n) if n > 0)
}
