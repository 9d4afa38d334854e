//! Control-socket messages (the slow path). A `SOCK_SEQPACKET` Unix socket carries one message
//! per packet, little-endian:
//!
//! ```text
//! 0 magic u32 = "SWCP"   4 version u16 = CONTROL_VERSION   6 kind u16   8 payload...
//! ```
//!
//! One connection is one session: `Hello` creates it, the engine answers `Welcome` with three
//! file descriptors (SCM_RIGHTS: region memfd, worker wake eventfd, session completion
//! eventfd) or `Error`. Closing the connection (or the process dying) ends the session.

pub const CONTROL_MAGIC: u32 = u32::from_le_bytes(*b"SWCP");
/// Bumped on any incompatible change of these messages.
pub const CONTROL_VERSION: u16 = 1;
/// Upper bound of one packet; longer packets are rejected.
pub const MAX_MESSAGE: usize = 512;
/// File descriptors sent with `Welcome`, in this order.
pub const WELCOME_FDS: usize = 3;

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
}

mod kind {
    pub const HELLO: u16 = 1;
    pub const WELCOME: u16 = 2;
    pub const ERROR: u16 = 3;
    pub const CLOSE: u16 = 4;
    pub const CLOSED: u16 = 5;
    pub const PING: u16 = 6;
    pub const PONG: u16 = 7;
}

/// Why a packet is not a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    Short { len: usize },
    BadMagic(u32),
    Version { found: u16, expected: u16 },
    UnknownKind(u16),
    BadPayload { kind: u16, len: usize },
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Short { len } => write!(
                f,
                "control packet of {len} bytes is shorter than its 8-byte header"
            ),
            Self::BadMagic(m) => write!(f, "control packet magic {m:#x} is not SWCP"),
            Self::Version { found, expected } => {
                write!(
                    f,
                    "control protocol version {found}, this side speaks {expected}"
                )
            }
            Self::UnknownKind(k) => write!(f, "unknown control message kind {k}"),
            Self::BadPayload { kind, len } => write!(
                f,
                "control message kind {kind} has a malformed {len}-byte payload"
            ),
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
            Message::Close | Message::Closed | Message::Ping | Message::Pong => {}
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
            kind::PONG => {
                exact(0)?;
                Message::Pong
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

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Message::decode(&bytes);
        }
    }
}
