//! Control-socket decoding must hold against any packet a peer can send: `Message::decode`
//! never panics, and whatever it accepts re-encodes into a packet within the SPEC's limits that
//! decodes to the same message. Strings longer than the SPEC allows (the decoder accepts them;
//! the encoder cuts them on a character boundary, `control.rs`) come back as that prefix.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ring_proto::control::{Message, MAX_MESSAGE, MAX_STATUS_PACKET};

/// The message's one string field, if it has one.
fn text(m: &Message) -> Option<&str> {
    match m {
        Message::Error { message, .. } => Some(message),
        Message::ConnectPeer { addr } => Some(addr),
        Message::StatusReply { json, .. } => Some(json),
        _ => None,
    }
}

fn with_text(m: &Message, t: &str) -> Message {
    match m.clone() {
        Message::Error { code, .. } => Message::Error {
            code,
            message: t.to_owned(),
        },
        Message::ConnectPeer { .. } => Message::ConnectPeer { addr: t.to_owned() },
        Message::StatusReply { more, .. } => Message::StatusReply {
            more,
            json: t.to_owned(),
        },
        other => other,
    }
}

fuzz_target!(|p: &[u8]| {
    let Ok(m) = Message::decode(p) else { return };
    let e = m.encode();
    let cap = if matches!(m, Message::StatusReply { .. }) {
        MAX_STATUS_PACKET
    } else {
        MAX_MESSAGE
    };
    assert!(e.len() <= cap, "{m:?} encodes to {} bytes, over {cap}", e.len());
    let m2 = Message::decode(&e).unwrap_or_else(|err| panic!("{m:?} re-encoded does not decode: {err}"));
    if m2 != m {
        // Only a cut string may differ: a proper prefix on a character boundary, nothing else.
        let (t, t2) = (text(&m).expect("only string messages are cut"), text(&m2).unwrap());
        assert!(t2.len() < t.len() && t.starts_with(t2), "{m:?} came back as {m2:?}");
        assert_eq!(with_text(&m, t2), m2, "{m:?} came back as {m2:?}");
    }
    assert_eq!(m2.encode(), e, "encoding is not a fixed point after one decode");
    // A packet already in canonical form (reserved bytes zero, text valid UTF-8, not cut)
    // re-encodes byte for byte.
    let hello_reserved = matches!(m, Message::Hello { .. }) && p[20..24] != [0; 4];
    let lossy = matches!(m, Message::Error { .. }) && std::str::from_utf8(&p[16..]).is_err();
    if m2 == m && !hello_reserved && !lossy {
        assert_eq!(e, p, "{m:?} re-encodes differently");
    }
});
