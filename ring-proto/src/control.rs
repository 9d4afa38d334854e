//! Control-socket messages (the slow path). A `SOCK_SEQPACKET` Unix socket carries one message
//! per packet, little-endian:
//!
//! ```text
//! 0 magic u32 = "SWCP"   4 version u16 = CONTROL_VERSION   6 kind u16   8 payload...
//! ```
//!
//! One connection is one session: `Hello` creates it, the engine answers `Welcome` with three
//! file descriptors (SCM_RIGHTS: size-sealed region memfd, the write end of the session's SQ
//! doorbell pipe, the read end of its CQ doorbell pipe) or `Error`. Closing the connection (or the process dying) ends the session.
//! An operator connection sends `Status` instead of `Hello` and gets the engine's state as
//! JSON in one or more `StatusReply` packets (the only packets above [`MAX_MESSAGE`]).

pub const CONTROL_MAGIC: u32 = u32::from_le_bytes(*b"SWCP");
/// Bumped on any incompatible change of these messages.
/// Version 2: Welcome's fds [1] and [2] are per-session pipe ends (SQ doorbell write end, CQ
/// doorbell read end) instead of shared eventfds; the region memfd is size-sealed.
pub const CONTROL_VERSION: u16 = 2;
/// Upper bound of one packet; longer packets are rejected.
pub const MAX_MESSAGE: usize = 512;
/// File descriptors sent with `Welcome`, in this order.
pub const WELCOME_FDS: usize = 3;
/// Upper bound of one `StatusReply` packet (the only message allowed to exceed
/// [`MAX_MESSAGE`]); a status client receives with a buffer of this size.
pub const MAX_STATUS_PACKET: usize = 64 * 1024;
/// Upper bound of the JSON bytes one `StatusReply` packet carries.
pub const MAX_STATUS_CHUNK: usize = MAX_STATUS_PACKET - 16;

/// Error codes of the `Error` message.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlErrorCode {
    /// The client speaks another control version or layout version.
    VersionMismatch = 1,
    /// The request asked for sizes the engine will not give (ring or buffer sizes).
    BadRequest = 2,
    /// The engine could not create the region (hugepages required and exhausted, shm limits).
    RegionUnavailable = 3,
    /// The engine is at `max-sessions`.
    TooManySessions = 4,
    /// The engine is shutting down.
    ShuttingDown = 5,
    /// The peer is not allowed to connect.
    PermissionDenied = 6,
    /// A message that does not parse.
    Malformed = 7,
    /// ConnectPeer: the session holds `control.max-peers-per-session` registrations already
    /// (the session goes on; the connection stays open).
    TooManyPeers = 8,
}

impl ControlErrorCode {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::VersionMismatch,
            2 => Self::BadRequest,
            3 => Self::RegionUnavailable,
            4 => Self::TooManySessions,
            5 => Self::ShuttingDown,
            6 => Self::PermissionDenied,
            7 => Self::Malformed,
            8 => Self::TooManyPeers,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Client → engine: open a session. Zero sizes mean "engine default".
    Hello {
        layout_version: u32,
        sq_entries: u32,
        cq_entries: u32,
        buf_size: u64,
    },
    /// Engine → client, with [`WELCOME_FDS`] descriptors.
    Welcome {
        session_id: u32,
        worker: u32,
        region_size: u64,
    },
    /// Engine → client: the request failed; the engine closes the connection after it.
    Error {
        code: u32,
        message: String,
    },
    /// Client → engine: finish what is in flight, then close (`Closed` follows).
    Close,
    /// Engine → client: every accepted request has completed; the session is gone.
    Closed,
    /// Client → engine: keep the lease alive; answered with `Pong`.
    Ping,
    Pong,
    /// Client → engine, on a session connection: register a peer engine's UCX listener
    /// address (`ip:port`) and get a handle for `SEND` entries. Handles are engine-wide (all
    /// sessions share the connection) and the connection is made on first use.
    ConnectPeer {
        addr: String,
    },
    /// Engine → client: the handle of the peer asked for (or `Error`).
    PeerConnected {
        peer: u32,
    },
    /// Operator → engine, instead of `Hello` as the first message: report the engine's state.
    /// The connection never becomes a session.
    Status,
    /// Engine → operator: a chunk of the status JSON; `more` says another packet follows.
    /// The engine closes the connection after the last one.
    StatusReply {
        more: bool,
        json: String,
    },
}

impl Message {
    /// The message's name as SPEC.md §2 spells it (for logs and error texts).
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "Hello",
            Message::Welcome { .. } => "Welcome",
            Message::Error { .. } => "Error",
            Message::Close => "Close",
            Message::Closed => "Closed",
            Message::Ping => "Ping",
            Message::Pong => "Pong",
            Message::ConnectPeer { .. } => "ConnectPeer",
            Message::PeerConnected { .. } => "PeerConnected",
            Message::Status => "Status",
            Message::StatusReply { .. } => "StatusReply",
        }
    }
}

mod kind {
    pub const HELLO: u16 = 1;
    pub const WELCOME: u16 = 2;
    pub const ERROR: u16 = 3;
    pub const CLOSE: u16 = 4;
    pub const CLOSED: u16 = 5;
    pub const PING: u16 = 6;
    pub const PONG: u16 = 7;
    pub const CONNECT_PEER: u16 = 8;
    pub const PEER_CONNECTED: u16 = 9;
    // Operator messages take kinds from 32 up, apart from the session protocol's.
    pub const STATUS: u16 = 32;
    pub const STATUS_REPLY: u16 = 33;
}

/// Why a packet is not a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    Short {
        len: usize,
    },
    BadMagic(u32),
    Version {
        found: u16,
        expected: u16,
    },
    UnknownKind(u16),
    BadPayload {
        kind: u16,
        len: usize,
    },
    /// A reserved field that MUST be zero is not (e.g. Hello's `reserved`).
    Reserved {
        kind: u16,
        value: u32,
    },
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Short { len } => write!(f, "control packet of {len} bytes is shorter than its 8-byte header"),
            Self::BadMagic(m) => write!(f, "control packet magic {m:#x} is not SWCP"),
            Self::Version { found, expected } => {
                write!(f, "control protocol version {found}, this side speaks {expected}")
            }
            Self::UnknownKind(k) => write!(f, "unknown control message kind {k}"),
            Self::BadPayload { kind, len } => {
                write!(f, "control message kind {kind} has a malformed {len}-byte payload")
            }
            Self::Reserved { kind, value } => {
                write!(
                    f,
                    "control message kind {kind} has reserved field {value:#x}; it must be 0"
                )
            }
        }
    }
}

impl std::error::Error for DecodeError {}

impl Message {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(32);
        let k = match self {
            Message::Hello { .. } => kind::HELLO,
            Message::Welcome { .. } => kind::WELCOME,
            Message::Error { .. } => kind::ERROR,
            Message::Close => kind::CLOSE,
            Message::Closed => kind::CLOSED,
            Message::Ping => kind::PING,
            Message::Pong => kind::PONG,
            Message::ConnectPeer { .. } => kind::CONNECT_PEER,
            Message::PeerConnected { .. } => kind::PEER_CONNECTED,
            Message::Status => kind::STATUS,
            Message::StatusReply { .. } => kind::STATUS_REPLY,
        };
        b.extend_from_slice(&CONTROL_MAGIC.to_le_bytes());
        b.extend_from_slice(&CONTROL_VERSION.to_le_bytes());
        b.extend_from_slice(&k.to_le_bytes());
        match self {
            Message::Hello {
                layout_version,
                sq_entries,
                cq_entries,
                buf_size,
            } => {
                b.extend_from_slice(&layout_version.to_le_bytes());
                b.extend_from_slice(&sq_entries.to_le_bytes());
                b.extend_from_slice(&cq_entries.to_le_bytes());
                b.extend_from_slice(&0u32.to_le_bytes());
                b.extend_from_slice(&buf_size.to_le_bytes());
            }
            Message::Welcome {
                session_id,
                worker,
                region_size,
            } => {
                b.extend_from_slice(&session_id.to_le_bytes());
                b.extend_from_slice(&worker.to_le_bytes());
                b.extend_from_slice(&region_size.to_le_bytes());
            }
            Message::Error { code, message } => {
                let m = truncate_utf8(message, MAX_MESSAGE - 16);
                b.extend_from_slice(&code.to_le_bytes());
                b.extend_from_slice(&(m.len() as u32).to_le_bytes());
                b.extend_from_slice(m.as_bytes());
            }
            Message::StatusReply { more, json } => {
                let j = truncate_utf8(json, MAX_STATUS_CHUNK);
                b.extend_from_slice(&(*more as u32).to_le_bytes());
                b.extend_from_slice(&(j.len() as u32).to_le_bytes());
                b.extend_from_slice(j.as_bytes());
            }
            Message::ConnectPeer { addr } => {
                let a = truncate_utf8(addr, MAX_MESSAGE - 16);
                b.extend_from_slice(&(a.len() as u32).to_le_bytes());
                b.extend_from_slice(a.as_bytes());
            }
            Message::PeerConnected { peer } => b.extend_from_slice(&peer.to_le_bytes()),
            Message::Close | Message::Closed | Message::Ping | Message::Pong | Message::Status => {}
        }
        b
    }

    /// Decodes one packet. Checks magic and version first, so a client of another version
    /// gets a `Version` error rather than a misparse.
    pub fn decode(p: &[u8]) -> Result<Self, DecodeError> {
        if p.len() < 8 {
            return Err(DecodeError::Short { len: p.len() });
        }
        let magic = u32::from_le_bytes(p[0..4].try_into().unwrap());
        if magic != CONTROL_MAGIC {
            return Err(DecodeError::BadMagic(magic));
        }
        let version = u16::from_le_bytes(p[4..6].try_into().unwrap());
        if version != CONTROL_VERSION {
            return Err(DecodeError::Version {
                found: version,
                expected: CONTROL_VERSION,
            });
        }
        let k = u16::from_le_bytes(p[6..8].try_into().unwrap());
        let body = &p[8..];
        let bad = || DecodeError::BadPayload {
            kind: k,
            len: body.len(),
        };
        let u32_at = |o: usize| u32::from_le_bytes(body[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(body[o..o + 8].try_into().unwrap());
        let exact = |n: usize| if body.len() == n { Ok(()) } else { Err(bad()) };
        Ok(match k {
            kind::HELLO => {
                exact(24)?;
                if u32_at(12) != 0 {
                    return Err(DecodeError::Reserved {
                        kind: k,
                        value: u32_at(12),
                    });
                }
                Message::Hello {
                    layout_version: u32_at(0),
                    sq_entries: u32_at(4),
                    cq_entries: u32_at(8),
                    buf_size: u64_at(16),
                }
            }
            kind::WELCOME => {
                exact(16)?;
                Message::Welcome {
                    session_id: u32_at(0),
                    worker: u32_at(4),
                    region_size: u64_at(8),
                }
            }
            kind::ERROR => {
                if body.len() < 8 {
                    return Err(bad());
                }
                let n = u32_at(4) as usize;
                if body.len() != 8 + n {
                    return Err(bad());
                }
                let message = String::from_utf8_lossy(&body[8..]).into_owned();
                Message::Error {
                    code: u32_at(0),
                    message,
                }
            }
            kind::CLOSE => {
                exact(0)?;
                Message::Close
            }
            kind::CLOSED => {
                exact(0)?;
                Message::Closed
            }
            kind::PING => {
                exact(0)?;
                Message::Ping
            }
            kind::CONNECT_PEER => {
                if body.len() < 4 || body.len() != 4 + u32_at(0) as usize {
                    return Err(bad());
                }
                let addr = std::str::from_utf8(&body[4..]).map_err(|_| bad())?.to_owned();
                Message::ConnectPeer { addr }
            }
            kind::PEER_CONNECTED => {
                exact(4)?;
                Message::PeerConnected { peer: u32_at(0) }
            }
            kind::PONG => {
                exact(0)?;
                Message::Pong
            }
            kind::STATUS => {
                exact(0)?;
                Message::Status
            }
            kind::STATUS_REPLY => {
                if body.len() < 8 || u32_at(0) > 1 || body.len() != 8 + u32_at(4) as usize {
                    return Err(bad());
                }
                let json = std::str::from_utf8(&body[8..]).map_err(|_| bad())?.to_owned();
                Message::StatusReply {
                    more: u32_at(0) == 1,
                    json,
                }
            }
            other => return Err(DecodeError::UnknownKind(other)),
        })
    }
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn roundtrip_all_kinds() {
        let msgs = [
            Message::Hello {
                layout_version: 1,
                sq_entries: 64,
                cq_entries: 128,
                buf_size: 1 << 20,
            },
            Message::Welcome {
                session_id: 7,
                worker: 1,
                region_size: 2 << 20,
            },
            Message::Error {
                code: 3,
                message: "no hugepages".into(),
            },
            Message::Close,
            Message::Closed,
            Message::Ping,
            Message::Pong,
            Message::ConnectPeer {
                addr: "127.0.0.1:13337".into(),
            },
            Message::PeerConnected { peer: 3 },
            Message::Status,
            Message::StatusReply {
                more: true,
                json: "{\"sessions\":[]}".into(),
            },
            Message::StatusReply {
                more: false,
                json: String::new(),
            },
        ];
        for m in msgs {
            assert_eq!(Message::decode(&m.encode()), Ok(m));
        }
    }

    #[test]
    fn version_checked_before_kind() {
        let mut p = Message::Ping.encode();
        p[4] = 9;
        assert_eq!(
            Message::decode(&p),
            Err(DecodeError::Version {
                found: 9,
                expected: CONTROL_VERSION
            })
        );
    }

    #[test]
    fn long_error_is_truncated_on_a_char_boundary() {
        let m = Message::Error {
            code: 1,
            message: "é".repeat(400),
        };
        let p = m.encode();
        assert!(p.len() <= MAX_MESSAGE);
        assert!(matches!(Message::decode(&p), Ok(Message::Error { .. })));
    }

    #[test]
    fn hello_with_a_nonzero_reserved_field_is_refused() {
        // SPEC.md §2: Hello's `reserved` (payload offset 12) MUST be 0.
        let mut p = Message::Hello {
            layout_version: 1,
            sq_entries: 0,
            cq_entries: 0,
            buf_size: 0,
        }
        .encode();
        assert!(Message::decode(&p).is_ok());
        p[8 + 12] = 1;
        assert_eq!(Message::decode(&p), Err(DecodeError::Reserved { kind: 1, value: 1 }));
    }

    #[test]
    fn status_kinds_decode_from_their_documented_bytes() {
        // SPEC.md §2: Status is kind 32 with no payload.
        let status = [0x53, 0x57, 0x43, 0x50, 2, 0, 32, 0];
        assert_eq!(Message::decode(&status), Ok(Message::Status));
        assert_eq!(Message::Status.encode(), status);
        // StatusReply: kind 33, flags u32 (bit 0: more follows), n u32, n bytes of JSON.
        let mut reply = vec![0x53, 0x57, 0x43, 0x50, 2, 0, 33, 0, 1, 0, 0, 0, 2, 0, 0, 0];
        reply.extend_from_slice(b"{}");
        assert_eq!(
            Message::decode(&reply),
            Ok(Message::StatusReply {
                more: true,
                json: "{}".into()
            })
        );
        // A length that disagrees with the packet, unknown flag bits or bad UTF-8 are malformed.
        let mut short = reply.clone();
        short.pop();
        assert!(matches!(
            Message::decode(&short),
            Err(DecodeError::BadPayload { kind: 33, .. })
        ));
        let mut flags = reply.clone();
        flags[8] = 2;
        assert!(Message::decode(&flags).is_err());
        let mut utf8 = reply.clone();
        utf8[16] = 0xff;
        assert!(Message::decode(&utf8).is_err());
        // Status with a payload is malformed.
        let mut long = status.to_vec();
        long.push(0);
        assert!(Message::decode(&long).is_err());
    }

    #[test]
    fn long_status_chunk_is_truncated_to_one_packet() {
        let m = Message::StatusReply {
            more: false,
            json: "é".repeat(MAX_STATUS_PACKET),
        };
        let p = m.encode();
        assert!(p.len() <= MAX_STATUS_PACKET);
        assert!(matches!(Message::decode(&p), Ok(Message::StatusReply { .. })));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Message::decode(&bytes);
        }
    }
}
