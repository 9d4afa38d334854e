//! Live sessions: control messages after the handshake (ping, peer registration, close,
//! protocol violations) and the workers' events that reclaim a session once its worker let go.

use std::os::fd::AsFd;
use std::time::Instant;

use ring_proto::control::{ControlErrorCode, Message};
use ring_proto::control_io::{self, RecvError};
use ring_proto::{CloseReason, SessionState};

use crate::worker::{Command, Event};

use super::ControlServer;

impl ControlServer {
    pub(super) fn handle_session_message(&mut self, id: u32) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        // Replies never wait: a client that does not read its socket loses them (SPEC §2).
        // Descriptors sent with any message are closed on the spot.
        let violation = match control_io::recv_nonblocking(conn.fd().as_fd()) {
            Err(RecvError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(RecvError::Eof) | Err(RecvError::Io(_)) => None,
            Ok(_) if conn.closing => {
                tracing::debug!(session = id, "control message after Close ignored");
                return;
            }
            Ok((Message::Ping, _)) => {
                conn.lease.last_seen = Instant::now();
                let _ = control_io::send_nonblocking(conn.fd().as_fd(), &Message::Pong, &[]);
                return;
            }
            Ok((Message::ConnectPeer { addr }, _)) => {
                conn.lease.last_seen = Instant::now();
                let max = self.cfg.control.max_peers_per_session;
                let reply = match addr.parse::<std::net::SocketAddr>() {
                    Ok(a) => match self.peers.handle_of(a).filter(|h| conn.peers.contains(h)) {
                        // Registered by this session already: same handle, nothing new held.
                        Some(peer) => Message::PeerConnected { peer },
                        None if conn.peers.len() >= max as usize => {
                            tracing::warn!(session = id, max, address = %a, "peer registration refused: the session holds the most allowed");
                            Message::Error {
                                code: ControlErrorCode::TooManyPeers as u32,
                                message: format!(
                                    "this session registered {max} peers already (control.max-peers-per-session); open another session or raise the limit"
                                ),
                            }
                        }
                        None => {
                            let peer = self.peers.register(a);
                            conn.peers.push(peer);
                            tracing::info!(session = id, peer, address = %a, "peer registered");
                            Message::PeerConnected { peer }
                        }
                    },
                    Err(_) => Message::Error {
                        code: ControlErrorCode::BadRequest as u32,
                        message: format!("peer address {addr:?} is not ip:port"),
                    },
                };
                let _ = control_io::send_nonblocking(conn.fd().as_fd(), &reply, &[]);
                return;
            }
            Ok((Message::Close, _)) => {
                conn.closing = true;
                self.remove(id, true, SessionState::Closed, CloseReason::ClientClosed);
                return;
            }
            // A second Hello, a Status, an engine-to-client kind: SPEC §2 ends the session.
            Ok((other, _)) => Some(format!("{} is not allowed after the handshake", other.name())),
            Err(e) => Some(e.to_string()),
        };
        let conn = self.conns.get_mut(&id).expect("checked above");
        if let Some(why) = violation {
            tracing::warn!(session = id, reason = %why, "control protocol violation; ending the session");
            let _ = control_io::send_nonblocking(
                conn.fd().as_fd(),
                &Message::Error {
                    code: ControlErrorCode::Malformed as u32,
                    message: why,
                },
                &[],
            );
        } else {
            tracing::info!(session = id, "client disconnected");
        }
        // The client closed its end, died or broke the protocol: reclaim everything (accepted
        // entries still complete first), as for EOF.
        if !conn.closing {
            conn.closing = true;
            self.remove(id, false, SessionState::Closed, CloseReason::ClientClosed);
        }
        // Stop polling the socket; it closes when the worker lets go.
        if let Some(c) = self.conns.get_mut(&id) {
            c.fd = None;
        }
    }

    /// Asks the session's worker to let go of it; the connection goes on `Event::Removed`.
    pub(super) fn remove(&mut self, id: u32, drain: bool, state: SessionState, reason: CloseReason) {
        if let Some(s) = self.conns.get(&id).and_then(|c| c.session.as_ref()) {
            self.workers[s.worker].send(Command::Remove {
                id,
                drain,
                state,
                reason,
            });
        }
    }

    pub(super) fn handle_worker_events(&mut self) {
        while let Ok(ev) = self.events.try_recv() {
            match ev {
                Event::Broken { id, reason } => {
                    tracing::warn!(session = id, ?reason, "session broken by its client");
                }
                Event::Removed { id } => {
                    if let Some(conn) = self.conns.remove(&id) {
                        let session = conn.session.expect("registered sessions have one");
                        self.registry.session_closed(id);
                        // After the worker let go: nothing of this session waits on a peer.
                        if self.peers.release(conn.peers.iter().copied()) {
                            // Workers close their connections to released peers promptly.
                            for w in &self.workers {
                                w.send(Command::PeersReleased);
                            }
                        }
                        self.load[session.worker] -= 1;
                        if let (true, Some(fd)) = (conn.closing, &conn.fd) {
                            let _ = control_io::send_nonblocking(fd.as_fd(), &Message::Closed, &[]);
                        }
                        let (client_pid, stats) = (session.client_pid, session.stats.summary());
                        // Dropping the connection closes the socket; dropping the last Arc
                        // unmaps the region and closes its memfd and eventfd. Both happen
                        // before the log line, so "session closed" means reclaimed (a metrics
                        // scrape in progress may hold the Arc a moment longer).
                        drop(conn.fd);
                        drop(session);
                        tracing::info!(session = id, client_pid, stats = %stats, "session closed");
                    }
                }
            }
        }
    }
}
