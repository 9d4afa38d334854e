package wire

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
	ControlMagic   uint32 = 0x50435753 // "SWCP" little-endian
	ControlVersion uint16 = 2
	MaxMessage            = 512
	WelcomeFDs            = 3
)

// message kinds
const (
	KindHello   uint16 = 1
	KindWelcome uint16 = 2
	KindError   uint16 = 3
	KindClose   uint16 = 4
	KindClosed  uint16 = 5
	KindPing    uint16 = 6
	KindPong    uint16 = 7
	// ConnectPeer (client → engine): register a peer engine's UCX listener address.
	KindConnectPeer uint16 = 8
	// PeerConnected (engine → client): the peer handle for SEND entries.
	KindPeerConnected uint16 = 9
)

// MaxPeerAddr is the longest ConnectPeer address (control.rs truncates at MAX_MESSAGE-16).
const MaxPeerAddr = MaxMessage - 16

// Message is a decoded control packet. Fields are used according to kind.
type Message struct {
	Kind uint16
	// Hello
	LayoutVersion, SQEntries, CQEntries uint32
	BufSize                             uint64
	// Welcome
	SessionID, Worker uint32
	RegionSize        uint64
	// Error
	Code uint32
	Text string
	// ConnectPeer
	Addr string
	// PeerConnected
	Peer uint32
}

func appendHeader(b []byte, kind uint16) []byte {
	b = binary.LittleEndian.AppendUint32(b, ControlMagic)
	b = binary.LittleEndian.AppendUint16(b, ControlVersion)
	return binary.LittleEndian.AppendUint16(b, kind)
}

// encode appends the packet for m to b.
func (m *Message) Encode(b []byte) []byte {
	b = appendHeader(b, m.Kind)
	le := binary.LittleEndian
	switch m.Kind {
	case KindHello:
		b = le.AppendUint32(b, m.LayoutVersion)
		b = le.AppendUint32(b, m.SQEntries)
		b = le.AppendUint32(b, m.CQEntries)
		b = le.AppendUint32(b, 0)
		b = le.AppendUint64(b, m.BufSize)
	case KindWelcome:
		b = le.AppendUint32(b, m.SessionID)
		b = le.AppendUint32(b, m.Worker)
		b = le.AppendUint64(b, m.RegionSize)
	case KindError:
		t := m.Text
		if len(t) > MaxMessage-16 {
			t = t[:MaxMessage-16]
			for len(t) > 0 && !utf8.ValidString(t) {
				t = t[:len(t)-1]
			}
		}
		b = le.AppendUint32(b, m.Code)
		b = le.AppendUint32(b, uint32(len(t)))
		b = append(b, t...)
	case KindConnectPeer:
		// Callers check the length (ConnectPeer refuses longer addresses); cut as
		// control.rs does, so the packet always fits.
		a := m.Addr
		if len(a) > MaxPeerAddr {
			a = a[:MaxPeerAddr]
			for len(a) > 0 && !utf8.ValidString(a) {
				a = a[:len(a)-1]
			}
		}
		b = le.AppendUint32(b, uint32(len(a)))
		b = append(b, a...)
	case KindPeerConnected:
		b = le.AppendUint32(b, m.Peer)
	}
	return b
}

// DecodeError explains why a packet is not a message; it wraps ErrProtocol, or
// ErrVersionMismatch for a packet of another control version.
type DecodeError struct {
	msg     string
	Version bool
}

func (e *DecodeError) Error() string { return "swring: control packet: " + e.msg }
func (e *DecodeError) Unwrap() error {
	if e.Version {
		return ErrVersionMismatch
	}
	return ErrProtocol
}

// DecodeMessage parses one packet: magic, then version, then kind, then the exact payload
// length, as control.rs Message::decode does.
func DecodeMessage(p []byte) (Message, error) {
	le := binary.LittleEndian
	if len(p) < 8 {
		return Message{}, &DecodeError{msg: fmt.Sprintf("%d bytes is shorter than the 8-byte header", len(p))}
	}
	if m := le.Uint32(p); m != ControlMagic {
		return Message{}, &DecodeError{msg: fmt.Sprintf("magic %#x is not SWCP", m)}
	}
	if v := le.Uint16(p[4:]); v != ControlVersion {
		return Message{}, &DecodeError{msg: fmt.Sprintf("control protocol version %d, this client speaks %d", v, ControlVersion), Version: true}
	}
	k := le.Uint16(p[6:])
	body := p[8:]
	bad := func() (Message, error) {
		return Message{}, &DecodeError{msg: fmt.Sprintf("kind %d has a malformed %d-byte payload", k, len(body))}
	}
	m := Message{Kind: k}
	switch k {
	case KindHello:
		if len(body) != 24 {
			return bad()
		}
		m.LayoutVersion = le.Uint32(body)
		m.SQEntries = le.Uint32(body[4:])
		m.CQEntries = le.Uint32(body[8:])
		m.BufSize = le.Uint64(body[16:])
	case KindWelcome:
		if len(body) != 16 {
			return bad()
		}
		m.SessionID = le.Uint32(body)
		m.Worker = le.Uint32(body[4:])
		m.RegionSize = le.Uint64(body[8:])
	case KindError:
		if len(body) < 8 {
			return bad()
		}
		n := le.Uint32(body[4:])
		if uint64(len(body)) != 8+uint64(n) {
			return bad()
		}
		m.Code = le.Uint32(body)
		m.Text = string(body[8:])
	case KindConnectPeer:
		if len(body) < 4 || uint64(len(body)) != 4+uint64(le.Uint32(body)) || !utf8.Valid(body[4:]) {
			return bad()
		}
		m.Addr = string(body[4:])
	case KindPeerConnected:
		if len(body) != 4 {
			return bad()
		}
		m.Peer = le.Uint32(body)
	case KindClose, KindClosed, KindPing, KindPong:
		if len(body) != 0 {
			return bad()
		}
	default:
		return Message{}, &DecodeError{msg: fmt.Sprintf("unknown kind %d", k)}
	}
	return m, nil
}
