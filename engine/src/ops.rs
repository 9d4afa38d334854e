//! Execution of one validated submission entry. The entry is the engine's private copy
//! (copied word by word out of shared memory once); nothing here reads the SQ again. What a
//! valid entry is belongs to the protocol: `ring_proto::validate` (re-exported here).

pub use ring_proto::validate::{validate, NeedleRequest, Request, RmaRequest, SendRequest};
use ring_proto::ResultCode;

/// Runs a validated local request against the session's buffer area; returns the CQE result.
/// Remote requests (`Send`) never come here: the data plane runs them.
///
/// `buf` must be the start of the session's buffer area, `layout.buf_size` bytes long.
pub fn execute(req: Request, buf: *mut u8) -> i32 {
    match req {
        Request::Nop => 0,
        Request::Send(_)
        | Request::Export { .. }
        | Request::Unexport { .. }
        | Request::Rma(_)
        | Request::ReadNeedle(_) => ResultCode::Internal as i32,
        Request::Fill { offset, len, byte } => {
            // Safety: `validate` checked offset + len <= buf_size for this session, and `buf`
            // is its buffer area. The client may read these bytes concurrently; libc's memset
            // is opaque to Rust's memory model, and the bytes are plain data to both sides.
            unsafe { libc::memset(buf.add(offset) as *mut libc::c_void, byte as libc::c_int, len) };
            len as i32
        }
    }
}
