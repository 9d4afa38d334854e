package swring

import (
	"encoding/binary"
	"fmt"
	"unicode/utf8"
)

// Control-socket messages (ring-proto/src/control.rs, SPEC.md §2). One message per
// SOCK_SEQPACKET packet, little-endian:
//
//	0 magic u32 = "SWCP" | 4 version u16 = 2 | 6 kind u16 | 8 payload...
const (
	controlMagic   uint32 = 0x50435753 // "SWCP" little-endian
	controlVersion uint16 = 2
	maxMessage            = 512
	welcomeFDs            = 3
)

// message kinds
const (
	kindHello   uint16 = 1
	kindWelcome uint16 = 2
	kindError   uint16 = 3
	kindClose   uint16 = 4
	kindClosed  uint16 = 5
	kindPing    uint16 = 6
	kindPong    uint16 = 7
	// ConnectPeer (client → engine): register a peer engine's UCX listener address.
	kindConnectPeer uint16 = 8
	// PeerConnected (engine → client): the peer handle for SEND entries.
	kindPeerConnected uint16 = 9
)

// maxPeerAddr is the longest ConnectPeer address (control.rs truncates at MAX_MESSAGE-16).
const maxPeerAddr = maxMessage - 16

// message is a decoded control packet. Fields are used according to kind.
type message struct {
	kind uint16
	// Hello
	layoutVersion, sqEntries, cqEntries uint32
	bufSize                             uint64
	// Welcome
	sessionID, worker uint32
	regionSize        uint64
	// Error
	code uint32
	text string
	// ConnectPeer
	addr string
	// PeerConnected
	peer uint32
}

func appendHeader(b []byte, kind uint16) []byte {
	b = binary.LittleEndian.AppendUint32(b, controlMagic)
	b = binary.LittleEndian.AppendUint16(b, controlVersion)
	return binary.LittleEndian.AppendUint16(b, kind)
}

// encode appends the packet for m to b.
func (m *message) encode(b []byte) []byte {
	b = appendHeader(b, m.kind)
	le := binary.LittleEndian
	switch m.kind {
	case kindHello:
		b = le.AppendUint32(b, m.layoutVersion)
		b = le.AppendUint32(b, m.sqEntries)
		b = le.AppendUint32(b, m.cqEntries)
		b = le.AppendUint32(b, 0)
		b = le.AppendUint64(b, m.bufSize)
	case kindWelcome:
		b = le.AppendUint32(b, m.sessionID)
		b = le.AppendUint32(b, m.worker)
		b = le.AppendUint64(b, m.regionSize)
	case kindError:
		t := m.text
		if len(t) > maxMessage-16 {
			t = t[:maxMessage-16]
			for len(t) > 0 && !utf8.ValidString(t) {
				t = t[:len(t)-1]
			}
		}
		b = le.AppendUint32(b, m.code)
		b = le.AppendUint32(b, uint32(len(t)))
		b = append(b, t...)
	case kindConnectPeer:
		// Callers check the length (ConnectPeer refuses longer addresses); cut as
		// control.rs does, so the packet always fits.
		a := m.addr
		if len(a) > maxPeerAddr {
			a = a[:maxPeerAddr]
			for len(a) > 0 && !utf8.ValidString(a) {
				a = a[:len(a)-1]
			}
		}
		b = le.AppendUint32(b, uint32(len(a)))
		b = append(b, a...)
	case kindPeerConnected:
		b = le.AppendUint32(b, m.peer)
	}
	return b
}

// decodeError explains why a packet is not a message; it wraps ErrProtocol, or
// ErrVersionMismatch for a packet of another control version.
type decodeError struct {
	msg     string
	version bool
}

func (e *decodeError) Error() string { return "swring: control packet: " + e.msg }
func (e *decodeError) Unwrap() error {
	if e.version {
		return ErrVersionMismatch
	}
	return ErrProtocol
}

// decodeMessage parses one packet: magic, then version, then kind, then the exact payload
// length, as control.rs Message::decode does.
func decodeMessage(p []byte) (message, error) {
	le := binary.LittleEndian
	if len(p) < 8 {
		return message{}, &decodeError{msg: fmt.Sprintf("%d bytes is shorter than the 8-byte header", len(p))}
	}
	if m := le.Uint32(p); m != controlMagic {
		return message{}, &decodeError{msg: fmt.Sprintf("magic %#x is not SWCP", m)}
	}
	if v := le.Uint16(p[4:]); v != controlVersion {
		return message{}, &decodeError{msg: fmt.Sprintf("control protocol version %d, this client speaks %d", v, controlVersion), version: true}
	}
	k := le.Uint16(p[6:])
	body := p[8:]
	bad := func() (message, error) {
		return message{}, &decodeError{msg: fmt.Sprintf("kind %d has a malformed %d-byte payload", k, len(body))}
	}
	m := message{kind: k}
	switch k {
	case kindHello:
		if len(body) != 24 {
			return bad()
		}
		m.layoutVersion = le.Uint32(body)
		m.sqEntries = le.Uint32(body[4:])
		m.cqEntries = le.Uint32(body[8:])
		m.bufSize = le.Uint64(body[16:])
	case kindWelcome:
		if len(body) != 16 {
			return bad()
		}
		m.sessionID = le.Uint32(body)
		m.worker = le.Uint32(body[4:])
		m.regionSize = le.Uint64(body[8:])
	case kindError:
		if len(body) < 8 {
			return bad()
		}
		n := le.Uint32(body[4:])
		if uint64(len(body)) != 8+uint64(n) {
			return bad()
		}
		m.code = le.Uint32(body)
		m.text = string(body[8:])
	case kindConnectPeer:
		if len(body) < 4 || uint64(len(body)) != 4+uint64(le.Uint32(body)) || !utf8.Valid(body[4:]) {
			return bad()
		}
		m.addr = string(body[4:])
	case kindPeerConnected:
		if len(body) != 4 {
			return bad()
		}
		m.peer = le.Uint32(body)
	case kindClose, kindClosed, kindPing, kindPong:
		if len(body) != 0 {
			return bad()
		}
	default:
		return message{}, &decodeError{msg: fmt.Sprintf("unknown kind %d", k)}
	}
	return m, nil
}
