//! Execution of one validated submission entry. The entry is the engine's private copy
//! (copied word by word out of shared memory once); nothing here reads the SQ again. What a
//! valid entry is belongs to the protocol: `ring_proto::validate` (re-exported here).

pub use ring_proto::validate::{validate, NeedleRequest, Request, RmaRequest, SendRequest};
use ring_proto::{ResultCode, SharedArea};

/// Runs a validated local request against the session's buffer area; returns the CQE result.
/// Remote requests never come here: the data plane runs them.
pub fn execute(req: Request, buf: &SharedArea) -> i32 {
    match req {
        Request::Nop => 0,
        Request::Send(_)
        | Request::Export { .. }
        | Request::Unexport { .. }
        | Request::Rma(_)
        | Request::ReadNeedle(_) => ResultCode::Internal as i32,
        // `validate` checked the range against this session's layout; the area checks again.
        Request::Fill { offset, len, byte } => match buf.fill(offset, len, byte) {
            Ok(()) => len as i32,
            Err(_) => ResultCode::Internal as i32,
        },
    }
}
