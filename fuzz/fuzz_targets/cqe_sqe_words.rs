//! Entries travel as 64-bit words: every bit pattern of an SQE's 8 words and a CQE's 2 words
//! is some entry, and converting either way loses nothing (so the engine's word-by-word copy
//! out of shared memory sees exactly what the client wrote, and the client reads back every
//! completion bit).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ring_proto::{Cqe, Entry, ResultCode, Sqe};

fn words<const N: usize>(data: &[u8]) -> [u64; N] {
    let mut w = [0u64; N];
    for (w, b) in w.iter_mut().zip(data.chunks(8)) {
        let mut le = [0u8; 8];
        le[..b.len()].copy_from_slice(b);
        *w = u64::from_le_bytes(le);
    }
    w
}

fuzz_target!(|data: &[u8]| {
    let sw: [u64; 8] = words(data);
    let cw: [u64; 2] = words(data.get(64..).unwrap_or_default());

    let sqe = Sqe::from_words(&sw);
    assert_eq!(sqe.to_words(), sw, "SQE words -> entry -> words");
    assert_eq!(Sqe::from_words(&sqe.to_words()), sqe, "SQE entry -> words -> entry");
    assert_eq!(sqe.user_data, sw[1]);
    assert_eq!(sqe.buf_offset, sw[2]);
    assert_eq!(sqe.args, [sw[4], sw[5], sw[6], sw[7]]);

    let cqe = Cqe::from_words(&cw);
    assert_eq!(cqe.to_words(), cw, "CQE words -> entry -> words");
    assert_eq!(Cqe::from_words(&cqe.to_words()), cqe, "CQE entry -> words -> entry");
    assert_eq!(cqe.user_data, cw[1]);
    assert_eq!(cqe.result, (cw[0] >> 32) as u32 as i32);
    // A negative result is an error code or unknown; never both a known code and success.
    if let Some(code) = ResultCode::from_result(cqe.result) {
        assert!(cqe.result < 0 && code as i32 == cqe.result);
    }
});
