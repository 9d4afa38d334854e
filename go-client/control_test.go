package swring

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestControlRoundTrip(t *testing.T) {
	msgs := []message{
		{kind: kindHello, layoutVersion: 1, sqEntries: 64, cqEntries: 128, bufSize: 1 << 20},
		{kind: kindWelcome, sessionID: 7, worker: 1, regionSize: 2 << 20},
		{kind: kindError, code: 3, text: "no hugepages"},
		{kind: kindClose}, {kind: kindClosed}, {kind: kindPing}, {kind: kindPong},
		{kind: kindConnectPeer, addr: "127.0.0.1:13337"}, {kind: kindConnectPeer, addr: "[::1]:9"},
		{kind: kindConnectPeer}, {kind: kindPeerConnected, peer: 3}, {kind: kindPeerConnected, peer: 0xfffffffe},
	}
	for _, m := range msgs {
		got, err := decodeMessage(m.encode(nil))
		if err != nil || got != m {
			t.Errorf("%+v: got %+v, %v", m, got, err)
		}
	}
}

// The Hello of SPEC.md §12, byte for byte.
func TestHelloBytesMatchSpec(t *testing.T) {
	want := []byte{0x53, 0x57, 0x43, 0x50, 2, 0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	got := (&message{kind: kindHello, layoutVersion: LayoutVersion}).encode(nil)
	if !bytes.Equal(got, want) {
		t.Fatalf("hello %x, spec %x", got, want)
	}
}

// ConnectPeer and PeerConnected as SPEC.md §2 lays them out, byte for byte.
func TestPeerMessagesBytesMatchSpec(t *testing.T) {
	want := append([]byte{0x53, 0x57, 0x43, 0x50, 2, 0, 8, 0, 11, 0, 0, 0}, "10.0.0.1:77"...)
	if got := (&message{kind: kindConnectPeer, addr: "10.0.0.1:77"}).encode(nil); !bytes.Equal(got, want) {
		t.Fatalf("connect-peer %x, spec %x", got, want)
	}
	want = []byte{0x53, 0x57, 0x43, 0x50, 2, 0, 9, 0, 0x04, 0x03, 0x02, 0x01}
	if got := (&message{kind: kindPeerConnected, peer: 0x01020304}).encode(nil); !bytes.Equal(got, want) {
		t.Fatalf("peer-connected %x, spec %x", got, want)
	}
	m, err := decodeMessage(want)
	if err != nil || m.kind != kindPeerConnected || m.peer != 0x01020304 {
		t.Fatalf("decode peer-connected: %+v %v", m, err)
	}
	// Too long an address is cut on a character boundary, as control.rs does.
	long := (&message{kind: kindConnectPeer, addr: strings.Repeat("é", 300)}).encode(nil)
	if len(long) > maxMessage {
		t.Fatalf("connect-peer of %d bytes", len(long))
	}
	if m, err := decodeMessage(long); err != nil || m.kind != kindConnectPeer || len(m.addr) != maxPeerAddr {
		t.Fatalf("truncated connect-peer: %d bytes, %v", len(m.addr), err)
	}
}

func TestControlDecodeErrors(t *testing.T) {
	ping := (&message{kind: kindPing}).encode(nil)
	v := append([]byte(nil), ping...)
	v[4] = 9
	if _, err := decodeMessage(v); !errors.Is(err, ErrVersionMismatch) {
		t.Errorf("version 9: %v", err)
	}
	// Version is checked before kind.
	v[6] = 99
	if _, err := decodeMessage(v); !errors.Is(err, ErrVersionMismatch) {
		t.Errorf("version before kind: %v", err)
	}
	for name, p := range map[string][]byte{
		"short":        ping[:7],
		"magic":        append([]byte{0, 0, 0, 0}, ping[4:]...),
		"unknown kind": append(append([]byte(nil), ping[:6]...), 99, 0),
		"ping payload": append(append([]byte(nil), ping...), 0),
		"welcome len":  (&message{kind: kindWelcome}).encode(nil)[:20],
		"error len":    append((&message{kind: kindError, text: "abc"}).encode(nil), 'x'),
		"peer long":    append((&message{kind: kindPeerConnected, peer: 1}).encode(nil), 0),
		"peer short":   (&message{kind: kindPeerConnected, peer: 1}).encode(nil)[:11],
		"connect none": (&message{kind: kindConnectPeer}).encode(nil)[:10],
		"connect len":  append((&message{kind: kindConnectPeer, addr: "1.2.3.4:5"}).encode(nil), '6'),
		"connect cut":  (&message{kind: kindConnectPeer, addr: "1.2.3.4:5"}).encode(nil)[:15],
		"connect utf8": append((&message{kind: kindConnectPeer, addr: "ab"}).encode(nil)[:12], 0xc3, 0x28),
	} {
		if _, err := decodeMessage(p); !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: %v", name, err)
		}
	}
	long := (&message{kind: kindError, code: 1, text: strings.Repeat("é", 400)}).encode(nil)
	if len(long) > maxMessage {
		t.Fatalf("error message of %d bytes", len(long))
	}
	if m, err := decodeMessage(long); err != nil || m.kind != kindError {
		t.Fatalf("truncated error: %v", err)
	}
}

// FuzzDecodeMessage: decoding never panics, and whatever decodes re-encodes to the same
// bytes (except Hello's reserved word, which is dropped, and texts and addresses longer than
// a packet holds, which encode cuts).
func FuzzDecodeMessage(f *testing.F) {
	for _, m := range []message{
		{kind: kindHello, layoutVersion: 1, sqEntries: 64, cqEntries: 128, bufSize: 1 << 20},
		{kind: kindWelcome, sessionID: 7, worker: 1, regionSize: 2 << 20},
		{kind: kindError, code: 3, text: "no hugepages"},
		{kind: kindClose}, {kind: kindClosed}, {kind: kindPing}, {kind: kindPong},
		{kind: kindConnectPeer, addr: "127.0.0.1:13337"}, {kind: kindConnectPeer, addr: "[fe80::1]:1"},
		{kind: kindPeerConnected, peer: 3},
	} {
		f.Add(m.encode(nil))
	}
	f.Add([]byte("SWCP\x02\x00\x08\x00\x02\x00\x00\x00\xc3\x28"))
	f.Add([]byte("SWCP\x02\x00\x09\x00\x01\x00\x00"))
	f.Add([]byte{})
	f.Add([]byte("SWCP\x02\x00\x03\x00\xff\xff\xff\xff\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, p []byte) {
		m, err := decodeMessage(p)
		if err != nil {
			if !errors.Is(err, ErrProtocol) && !errors.Is(err, ErrVersionMismatch) {
				t.Fatalf("error %v matches no sentinel", err)
			}
			return
		}
		out := m.encode(nil)
		if m.kind == kindHello {
			copy(out[20:24], p[20:24])
		}
		if m.kind == kindError && len(p) > maxMessage {
			return
		}
		if m.kind == kindConnectPeer && len(m.addr) > maxPeerAddr {
			return // encode cuts it, like control.rs
		}
		if m.kind == kindConnectPeer && !utf8.ValidString(m.addr) {
			t.Fatalf("connect-peer address %q is not UTF-8", m.addr)
		}
		if !bytes.Equal(out, p) {
			t.Fatalf("re-encoded %x, input %x", out, p)
		}
	})
}

// FuzzCompletionParsing feeds arbitrary CQ contents and tail values to the client's CQ
// consumer: corrupt tails must be reported, never trusted; parsed completions must round
// trip; dispatch must count unknown user_data as stray and never panic.
func FuzzCompletionParsing(f *testing.F) {
	f.Add(uint32(0), uint32(1), []byte{1, 0, 0, 0, 0, 0, 0, 0, 0xfd, 0xff, 0xff, 0xff, 0, 0, 0, 0})
	f.Add(uint32(0xfffffffe), uint32(3), make([]byte, 64))
	f.Add(uint32(5), uint32(100), []byte{})
	f.Fuzz(func(t *testing.T, start, advance uint32, data []byte) {
		h := newHeapRings(t, 2, 4)
		h.setIndices(start)
		cq := h.reg.bytes(h.l.CQArrayOffset, 4*cqeSize)
		copy(cq, data)
		tail := start + advance
		*h.cqCons.ctl.tail = tail
		n, err := h.cqCons.refresh()
		if advance > 4 {
			if err == nil {
				t.Fatalf("tail %d ahead of head %d by %d accepted", tail, start, advance)
			}
			return
		}
		if err != nil || n != advance {
			t.Fatalf("ready %d, %v; want %d", n, err, advance)
		}
		c := &Client{slots: make([]slot, 4), freeSlots: make(chan uint32, 4)}
		for i := range c.slots {
			c.slots[i].done = make(chan struct{}, 1)
		}
		c.slots[1].gen.Store(1)
		c.slots[1].state.Store(slotPending)
		for i := uint32(0); i < n; i++ {
			e := h.cqCons.popCQE()
			w := e.words()
			if back := cqeFromWords(w[0], w[1]); back != e {
				t.Fatalf("round trip %+v -> %+v", e, back)
			}
			if (e.Result < 0) != (e.Err() != nil) {
				t.Fatalf("Err() of %d", e.Result)
			}
			c.completeSlot(uint32(e.UserData), uint32(e.UserData>>32), e.Result, e.Flags, nil)
		}
		h.cqCons.release()
		if *h.cqCons.ctl.head != tail {
			t.Fatal("head not released to tail")
		}
		st := c.slots[1].state.Load()
		if st != slotPending && st != slotDone {
			t.Fatalf("slot state %d", st)
		}
	})
}
