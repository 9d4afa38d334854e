package wire

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestControlRoundTrip(t *testing.T) {
	msgs := []Message{
		{Kind: KindHello, LayoutVersion: 1, SQEntries: 64, CQEntries: 128, BufSize: 1 << 20},
		{Kind: KindWelcome, SessionID: 7, Worker: 1, RegionSize: 2 << 20},
		{Kind: KindError, Code: 3, Text: "no hugepages"},
		{Kind: KindClose}, {Kind: KindClosed}, {Kind: KindPing}, {Kind: KindPong},
		{Kind: KindConnectPeer, Addr: "127.0.0.1:13337"}, {Kind: KindConnectPeer, Addr: "[::1]:9"},
		{Kind: KindConnectPeer}, {Kind: KindPeerConnected, Peer: 3}, {Kind: KindPeerConnected, Peer: 0xfffffffe},
	}
	for _, m := range msgs {
		got, err := DecodeMessage(m.Encode(nil))
		if err != nil || got != m {
			t.Errorf("%+v: got %+v, %v", m, got, err)
		}
	}
}

// The Hello of SPEC.md §12, byte for byte.
func TestHelloBytesMatchSpec(t *testing.T) {
	want := []byte{0x53, 0x57, 0x43, 0x50, 2, 0, 1, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	got := (&Message{Kind: KindHello, LayoutVersion: LayoutVersion}).Encode(nil)
	if !bytes.Equal(got, want) {
		t.Fatalf("hello %x, spec %x", got, want)
	}
}

// ConnectPeer and PeerConnected as SPEC.md §2 lays them out, byte for byte.
func TestPeerMessagesBytesMatchSpec(t *testing.T) {
	want := append([]byte{0x53, 0x57, 0x43, 0x50, 2, 0, 8, 0, 11, 0, 0, 0}, "10.0.0.1:77"...)
	if got := (&Message{Kind: KindConnectPeer, Addr: "10.0.0.1:77"}).Encode(nil); !bytes.Equal(got, want) {
		t.Fatalf("connect-peer %x, spec %x", got, want)
	}
	want = []byte{0x53, 0x57, 0x43, 0x50, 2, 0, 9, 0, 0x04, 0x03, 0x02, 0x01}
	if got := (&Message{Kind: KindPeerConnected, Peer: 0x01020304}).Encode(nil); !bytes.Equal(got, want) {
		t.Fatalf("peer-connected %x, spec %x", got, want)
	}
	m, err := DecodeMessage(want)
	if err != nil || m.Kind != KindPeerConnected || m.Peer != 0x01020304 {
		t.Fatalf("decode peer-connected: %+v %v", m, err)
	}
	// Too long an address is cut on a character boundary, as control.rs does.
	long := (&Message{Kind: KindConnectPeer, Addr: strings.Repeat("é", 300)}).Encode(nil)
	if len(long) > MaxMessage {
		t.Fatalf("connect-peer of %d bytes", len(long))
	}
	if m, err := DecodeMessage(long); err != nil || m.Kind != KindConnectPeer || len(m.Addr) != MaxPeerAddr {
		t.Fatalf("truncated connect-peer: %d bytes, %v", len(m.Addr), err)
	}
}

func TestControlDecodeErrors(t *testing.T) {
	ping := (&Message{Kind: KindPing}).Encode(nil)
	v := append([]byte(nil), ping...)
	v[4] = 9
	if _, err := DecodeMessage(v); !errors.Is(err, ErrVersionMismatch) {
		t.Errorf("version 9: %v", err)
	}
	// Version is checked before kind.
	v[6] = 99
	if _, err := DecodeMessage(v); !errors.Is(err, ErrVersionMismatch) {
		t.Errorf("version before kind: %v", err)
	}
	for name, p := range map[string][]byte{
		"short":        ping[:7],
		"magic":        append([]byte{0, 0, 0, 0}, ping[4:]...),
		"unknown kind": append(append([]byte(nil), ping[:6]...), 99, 0),
		"ping payload": append(append([]byte(nil), ping...), 0),
		"welcome len":  (&Message{Kind: KindWelcome}).Encode(nil)[:20],
		"error len":    append((&Message{Kind: KindError, Text: "abc"}).Encode(nil), 'x'),
		"peer long":    append((&Message{Kind: KindPeerConnected, Peer: 1}).Encode(nil), 0),
		"peer short":   (&Message{Kind: KindPeerConnected, Peer: 1}).Encode(nil)[:11],
		"connect none": (&Message{Kind: KindConnectPeer}).Encode(nil)[:10],
		"connect len":  append((&Message{Kind: KindConnectPeer, Addr: "1.2.3.4:5"}).Encode(nil), '6'),
		"connect cut":  (&Message{Kind: KindConnectPeer, Addr: "1.2.3.4:5"}).Encode(nil)[:15],
		"connect utf8": append((&Message{Kind: KindConnectPeer, Addr: "ab"}).Encode(nil)[:12], 0xc3, 0x28),
	} {
		if _, err := DecodeMessage(p); !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: %v", name, err)
		}
	}
	long := (&Message{Kind: KindError, Code: 1, Text: strings.Repeat("é", 400)}).Encode(nil)
	if len(long) > MaxMessage {
		t.Fatalf("error message of %d bytes", len(long))
	}
	if m, err := DecodeMessage(long); err != nil || m.Kind != KindError {
		t.Fatalf("truncated error: %v", err)
	}
}

// FuzzDecodeMessage: decoding never panics, and whatever decodes re-encodes to the same
// bytes (except Hello's reserved word, which is dropped, and texts and addresses longer than
// a packet holds, which encode cuts).
func FuzzDecodeMessage(f *testing.F) {
	for _, m := range []Message{
		{Kind: KindHello, LayoutVersion: 1, SQEntries: 64, CQEntries: 128, BufSize: 1 << 20},
		{Kind: KindWelcome, SessionID: 7, Worker: 1, RegionSize: 2 << 20},
		{Kind: KindError, Code: 3, Text: "no hugepages"},
		{Kind: KindClose}, {Kind: KindClosed}, {Kind: KindPing}, {Kind: KindPong},
		{Kind: KindConnectPeer, Addr: "127.0.0.1:13337"}, {Kind: KindConnectPeer, Addr: "[fe80::1]:1"},
		{Kind: KindPeerConnected, Peer: 3},
	} {
		f.Add(m.Encode(nil))
	}
	f.Add([]byte("SWCP\x02\x00\x08\x00\x02\x00\x00\x00\xc3\x28"))
	f.Add([]byte("SWCP\x02\x00\x09\x00\x01\x00\x00"))
	f.Add([]byte{})
	f.Add([]byte("SWCP\x02\x00\x03\x00\xff\xff\xff\xff\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, p []byte) {
		m, err := DecodeMessage(p)
		if err != nil {
			if !errors.Is(err, ErrProtocol) && !errors.Is(err, ErrVersionMismatch) {
				t.Fatalf("error %v matches no sentinel", err)
			}
			return
		}
		out := m.Encode(nil)
		if m.Kind == KindHello {
			copy(out[20:24], p[20:24])
		}
		if m.Kind == KindError && len(p) > MaxMessage {
			return
		}
		if m.Kind == KindConnectPeer && len(m.Addr) > MaxPeerAddr {
			return // encode cuts it, like control.rs
		}
		if m.Kind == KindConnectPeer && !utf8.ValidString(m.Addr) {
			t.Fatalf("connect-peer address %q is not UTF-8", m.Addr)
		}
		if !bytes.Equal(out, p) {
			t.Fatalf("re-encoded %x, input %x", out, p)
		}
	})
}
