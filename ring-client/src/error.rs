//! One error type per operation.

use std::io;
use std::path::PathBuf;

use ring_proto::control::ControlErrorCode;
use ring_proto::layout::LayoutError;
use ring_proto::{CloseReason, SessionState};

/// Why `Session::connect` failed.
#[derive(Debug)]
pub enum ConnectError {
    /// Nothing listens on the control socket (start the engine, or check `--socket`).
    EngineNotRunning {
        path: PathBuf,
    },
    /// The engine refused the session and said why.
    Rejected {
        code: Option<ControlErrorCode>,
        message: String,
    },
    /// The engine sent something this client does not understand.
    Protocol(String),
    /// The region's header does not describe a layout this client can use.
    Layout(LayoutError),
    /// The region was not marked ready.
    NotReady {
        state: u32,
    },
    Io(io::Error),
}

/// Why a submission failed.
#[derive(Debug)]
pub enum SubmitError {
    /// The SQ is full: reap completions and try again.
    Full,
    /// The session ended (engine shut down, crashed, or cut the session off).
    EngineUnavailable,
    /// Waking the engine failed.
    Io(io::Error),
}

/// Why waiting for a completion failed.
#[derive(Debug)]
pub enum WaitError {
    Timeout,
    /// The engine will complete nothing more on this session.
    EngineUnavailable {
        state: SessionState,
        reason: Option<CloseReason>,
    },
    Io(io::Error),
}

/// Why a graceful close failed.
#[derive(Debug)]
pub enum CloseError {
    EngineGone,
    Protocol(String),
    Io(io::Error),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::EngineNotRunning { path } => {
                write!(
                    f,
                    "no engine is listening on {} (is it running? is the path right?)",
                    path.display()
                )
            }
            Self::Rejected { code, message } => {
                write!(f, "engine refused the session ({code:?}): {message}")
            }
            Self::Protocol(m) => write!(f, "control protocol error: {m}"),
            Self::Layout(e) => write!(f, "region header rejected: {e}"),
            Self::NotReady { state } => write!(f, "region state is {state}, not ready"),
            Self::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::fmt::Display for SubmitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Full => write!(f, "submission queue is full"),
            Self::EngineUnavailable => write!(f, "the engine ended this session"),
            Self::Io(e) => write!(f, "waking the engine: {e}"),
        }
    }
}

impl std::fmt::Display for WaitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Timeout => write!(f, "timed out waiting for a completion"),
            Self::EngineUnavailable { state, reason } => {
                write!(f, "the engine ended this session (state {state:?}, reason {reason:?})")
            }
            Self::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::fmt::Display for CloseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::EngineGone => write!(f, "the engine closed the connection before confirming"),
            Self::Protocol(m) => write!(f, "control protocol error: {m}"),
            Self::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ConnectError {}
impl std::error::Error for SubmitError {}
impl std::error::Error for WaitError {}
impl std::error::Error for CloseError {}
