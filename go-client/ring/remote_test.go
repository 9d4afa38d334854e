package ring

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Remote requests (SEND, ConnectPeer). The integration tests run against the fake engine
// (every peer echoes in place) and the real engine listening on 127.0.0.1 over UCX tcp,
// connected to its own listener.

func checkEcho(t *testing.T, what string, req, resp []byte, n, size int, untouched byte) {
	t.Helper()
	if n != size {
		t.Fatalf("%s: response of %d bytes, want %d", what, n, size)
	}
	if !bytes.Equal(resp[:n], req[:size]) {
		for i := range resp[:n] {
			if resp[i] != req[i] {
				t.Fatalf("%s: response byte %d = %#x, want %#x", what, i, resp[i], req[i])
			}
		}
	}
	for i := n; i < len(resp); i++ {
		if resp[i] != untouched {
			t.Fatalf("%s: byte %d after the %d-byte response changed to %#x", what, i, n, resp[i])
		}
	}
}

func connectPeer(t *testing.T, c *Client, addr string) Peer {
	t.Helper()
	p, err := c.ConnectPeer(testCtx(t), addr)
	if err != nil {
		t.Fatalf("ConnectPeer(%q): %v", addr, err)
	}
	if p == 0 {
		t.Fatal("peer handle 0")
	}
	return p
}

func TestEngineSendEcho(t *testing.T) {
	forEachEngineUCX(t, func(t *testing.T, e *engineProc) {
		c := e.dial(t, WithBufferSize(8<<20))
		ctx := testCtx(t)
		p := connectPeer(t, c, e.peerAddr)
		if p2 := connectPeer(t, c, e.peerAddr); p2 != p {
			t.Fatalf("same address, handles %d and %d", p, p2)
		}
		// Handles are engine-wide.
		if p3 := connectPeer(t, e.dial(t), e.peerAddr); p3 != p {
			t.Fatalf("another session got handle %d, want %d", p3, p)
		}

		for _, size := range []int{0, 8, 4096, 1 << 20} {
			var req Buffer
			var reqBytes []byte
			if size > 0 {
				var err error
				if req, err = c.AllocBuffer(ctx, size); err != nil {
					t.Fatal(err)
				}
				fillPattern(req.Bytes(), size)
				reqBytes = req.Bytes()
			}
			resp, err := c.AllocBuffer(ctx, size+4096) // room to spare: nothing lands past n
			if err != nil {
				t.Fatal(err)
			}
			for i := range resp.Bytes() {
				resp.Bytes()[i] = 0xee
			}
			n, err := c.Send(ctx, p, ServiceEcho, req, resp)
			if err != nil {
				t.Fatalf("send %d bytes: %v", size, err)
			}
			checkEcho(t, "send", reqBytes, resp.Bytes(), n, size, 0xee)
			// Again through Submit/Wait, into an exactly fitting response buffer.
			exact := resp.Slice(0, size)
			for i := range exact.Bytes() {
				exact.Bytes()[i] = 0
			}
			tk, err := c.SubmitSend(ctx, p, ServiceEcho, req, exact)
			if err != nil {
				t.Fatal(err)
			}
			r, err := tk.Wait(ctx)
			if err != nil {
				t.Fatalf("async send %d bytes: %v", size, err)
			}
			checkEcho(t, "async send", reqBytes, exact.Bytes(), int(r), size, 0)
			if req.Valid() {
				req.Release()
			}
			resp.Release()
		}

		// Parts of buffers (Slice), empty requests and responses.
		buf, err := c.AllocBuffer(ctx, 8192)
		if err != nil {
			t.Fatal(err)
		}
		defer buf.Release()
		fillPattern(buf.Bytes(), 3)
		want := append([]byte(nil), buf.Bytes()[100:300]...)
		n, err := c.Send(ctx, p, ServiceEcho, buf.Slice(100, 200), buf.Slice(5000, 3000))
		if err != nil || n != 200 || !bytes.Equal(buf.Bytes()[5000:5200], want) {
			t.Fatalf("sliced send: %d, %v", n, err)
		}
		for _, reqB := range []Buffer{{}, buf.Slice(0, 0)} {
			for _, respB := range []Buffer{{}, buf.Slice(8192, 0), buf.Slice(0, 16)} {
				if n, err := c.Send(ctx, p, ServiceEcho, reqB, respB); n != 0 || err != nil {
					t.Fatalf("empty send: %d, %v", n, err)
				}
			}
		}

		// A batch of SENDs in one publication.
		reqs := make([]Request, 8)
		for i := range reqs {
			reqs[i] = SendRequest(p, ServiceEcho, buf.Slice(i*64, 64), buf.Slice(4096+i*64, 64))
		}
		ts := make([]Ticket, len(reqs))
		k, err := c.SubmitBatch(ctx, reqs, ts)
		if err != nil || k != len(reqs) {
			t.Fatalf("batch: %d, %v", k, err)
		}
		for i, tk := range ts {
			if r, err := tk.Wait(ctx); r != 64 || err != nil {
				t.Fatalf("batch send %d: %d, %v", i, r, err)
			}
		}
		if !bytes.Equal(buf.Bytes()[4096:4096+512], buf.Bytes()[:512]) {
			t.Fatal("batched echoes differ from their requests")
		}
		if s := c.Stats(); s.Stray != 0 {
			t.Fatalf("stats %+v", s)
		}
	})
}

// 64 goroutines × 20 SENDs, sync and async, each checked byte by byte, with a CQ smaller
// than the number in flight; every request is accounted for.
func TestEngineSendConcurrent(t *testing.T) {
	forEachEngineUCX(t, func(t *testing.T, e *engineProc) {
		const goroutines, perG = 64, 20
		c := e.dial(t, WithRingSizes(16, 32), WithBufferSize(4<<20), WithSpin(20*time.Microsecond))
		ctx := testCtx(t)
		p := connectPeer(t, c, e.peerAddr)
		before := c.Stats()
		var wg sync.WaitGroup
		var ok atomic.Int64
		for g := 0; g < goroutines; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				size := 1 + (g*997)%16000
				req, err := c.AllocBuffer(ctx, size)
				if err != nil {
					t.Error(err)
					return
				}
				defer req.Release()
				resp, err := c.AllocBuffer(ctx, size)
				if err != nil {
					t.Error(err)
					return
				}
				defer resp.Release()
				for i := 0; i < perG; i++ {
					fillPattern(req.Bytes(), g*31+i)
					clear(resp.Bytes())
					var n int
					if i%2 == 0 {
						n, err = c.Send(ctx, p, ServiceEcho, req, resp)
					} else {
						var tk Ticket
						if tk, err = c.SubmitSend(ctx, p, ServiceEcho, req, resp); err == nil {
							var r int32
							r, err = tk.Wait(ctx)
							n = int(r)
						}
					}
					if err != nil {
						t.Errorf("goroutine %d send %d: %v", g, i, err)
						return
					}
					if n != size || !bytes.Equal(resp.Bytes(), req.Bytes()) {
						t.Errorf("goroutine %d send %d: %d bytes, want %d, equal %v", g, i, n, size, bytes.Equal(resp.Bytes(), req.Bytes()))
						return
					}
					ok.Add(1)
				}
			}(g)
		}
		wg.Wait()
		if ok.Load() != goroutines*perG {
			t.Fatalf("%d of %d sends succeeded", ok.Load(), goroutines*perG)
		}
		// The leader that reaped the last completions may count them a moment after their
		// waiters returned.
		deadline := time.Now().Add(30 * time.Second)
		for {
			s := c.Stats()
			if s.Submitted-before.Submitted == goroutines*perG && s.Completed == s.Submitted && s.Stray == 0 &&
				freeSlots(t, c) == c.MaxInFlight() && s.Buffers.Allocations == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("accounting: stats %+v (before %+v), %d/%d slots free", s, before, freeSlots(t, c), c.MaxInFlight())
			}
			time.Sleep(time.Millisecond)
		}
	})
}

func TestEngineSendErrors(t *testing.T) {
	forEachEngineUCX(t, func(t *testing.T, e *engineProc) {
		c := e.dial(t)
		ctx := testCtx(t)
		p := connectPeer(t, c, e.peerAddr)
		req, err := c.AllocBuffer(ctx, 4096)
		if err != nil {
			t.Fatal(err)
		}
		defer req.Release()
		resp, err := c.AllocBuffer(ctx, 4096)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Release()
		fillPattern(req.Bytes(), 9)

		for _, tc := range []struct {
			name    string
			peer    Peer
			service uint32
			resp    Buffer
			want    error
		}{
			{"peer 0", 0, ServiceEcho, resp, ErrNoSuchPeer},
			{"unknown peer", p + 1000, ServiceEcho, resp, ErrNoSuchPeer},
			{"service 77", p, 77, resp, ErrUnknownService},
			{"response too small", p, ServiceEcho, resp.Slice(0, 4095), ErrResponseTooLarge},
			{"no response buffer", p, ServiceEcho, Buffer{}, ErrResponseTooLarge},
		} {
			n, err := c.Send(ctx, tc.peer, tc.service, req, tc.resp)
			if !errors.Is(err, tc.want) || n != 0 {
				t.Fatalf("%s: %d, %v; want %v", tc.name, n, err, tc.want)
			}
			var re ResultError
			if !errors.As(err, &re) || re != tc.want {
				t.Fatalf("%s: %v is not the ResultError %v", tc.name, err, tc.want)
			}
		}

		if e.kind == "rust" {
			// A registered address where no engine listens (a port just closed): the SEND
			// completes with peer-failed (connection refused), or timed-out at worst.
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			dead := ln.Addr().String()
			ln.Close()
			q := connectPeer(t, c, dead)
			if q == p {
				t.Fatalf("two addresses, one handle %d", q)
			}
			if _, err := c.Send(ctx, q, ServiceEcho, req, resp); !errors.Is(err, ErrPeerFailed) && !errors.Is(err, ErrTimedOut) {
				t.Fatalf("send to %s (nothing listens): %v", dead, err)
			}
		}

		// Addresses the engine refuses, and ones the client refuses before sending.
		for _, addr := range []string{"not an address", "", "127.0.0.1", "bad\xff:1", strings.Repeat("1", 600)} {
			_, err := c.ConnectPeer(ctx, addr)
			if !errors.Is(err, ErrBadPeerAddress) {
				t.Fatalf("ConnectPeer(%q): %v, want ErrBadPeerAddress", addr, err)
			}
			var pe *PeerError
			if !errors.As(err, &pe) || pe.Addr != addr || pe.Code != CtlBadRequest {
				t.Fatalf("ConnectPeer(%q): %#v", addr, err)
			}
			if addr == "not an address" && !strings.Contains(err.Error(), `"not an address"`) {
				t.Fatalf("error does not name the address: %v", err)
			}
			if errors.Is(err, ErrEngineUnavailable) {
				t.Fatalf("ConnectPeer(%q): %v ends the session", addr, err)
			}
		}

		// The session goes on.
		if err := c.Err(); err != nil {
			t.Fatalf("session after refused addresses: %v", err)
		}
		if err := c.Ping(ctx); err != nil {
			t.Fatal(err)
		}
		if err := c.Nop(ctx); err != nil {
			t.Fatal(err)
		}
		if p2 := connectPeer(t, c, e.peerAddr); p2 != p {
			t.Fatalf("handle %d, then %d", p, p2)
		}
		n, err := c.Send(ctx, p, ServiceEcho, req, resp)
		if err != nil {
			t.Fatal(err)
		}
		checkEcho(t, "send after errors", req.Bytes(), resp.Bytes(), n, 4096, 0)
	})
}

// A ConnectPeer that gave up (ctx) leaves its reply on the way; the next call must skip it
// and return its own handle.
func TestConnectPeerCancelledReplySkipped(t *testing.T) {
	gate := make(chan struct{})
	_, path := startFake(t, func(e *fakeEngine) { e.PeerGate = gate })
	c := dialT(t, path)
	ctx := testCtx(t)
	opened := false
	defer func() {
		if !opened {
			close(gate)
		}
	}()

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.ConnectPeer(cctx, "10.0.0.1:1"); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled ctx: %v", err)
	}
	errc := make(chan error, 1)
	cctx, cancel = context.WithCancel(ctx)
	go func() {
		_, err := c.ConnectPeer(cctx, "10.0.0.1:1") // the engine holds its reply
		errc <- err
	}()
	// Cancel once the request is on its way (the engine is blocked answering it).
	for {
		c.peerSeqMu.Lock()
		sent := c.peerSent
		c.peerSeqMu.Unlock()
		if sent == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled ConnectPeer: %v", err)
	}
	close(gate)
	opened = true
	// 10.0.0.1:1 got handle 1 (the reply nobody waits for); this one is 2.
	if p := connectPeer(t, c, "10.0.0.2:2"); p != 2 {
		t.Fatalf("got handle %d, want 2 (the stale reply was taken)", p)
	}
	if p := connectPeer(t, c, "10.0.0.1:1"); p != 1 {
		t.Fatalf("got handle %d, want 1", p)
	}
	// Concurrent calls are serialized and each gets its own answer.
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			addr := "10.0.0.1:1"
			want := Peer(1)
			if i%2 == 1 {
				addr, want = "10.0.0.2:2", 2
			}
			if p, err := c.ConnectPeer(ctx, addr); err != nil || p != want {
				t.Errorf("ConnectPeer(%q) = %d, %v; want %d", addr, p, err, want)
			}
		}(i)
	}
	wg.Wait()
}

func TestConnectPeerEngineGone(t *testing.T) {
	gate := make(chan struct{})
	e, path := startFake(t, func(e *fakeEngine) { e.PeerGate = gate })
	c := dialT(t, path)
	ctx := testCtx(t)
	errc := make(chan error, 1)
	go func() {
		_, err := c.ConnectPeer(ctx, "10.0.0.1:1")
		errc <- err
	}()
	for {
		c.peerSeqMu.Lock()
		sent := c.peerSent
		c.peerSeqMu.Unlock()
		if sent == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	// The session dies while the reply is outstanding.
	e.DropSessions()
	if err := <-errc; !errors.Is(err, ErrEngineUnavailable) {
		t.Fatalf("ConnectPeer on a dropped session: %v", err)
	}
	close(gate)
	c.Close()
	if _, err := c.ConnectPeer(ctx, "10.0.0.1:1"); !errors.Is(err, ErrEngineUnavailable) && !errors.Is(err, ErrClosed) {
		t.Fatalf("ConnectPeer after Close: %v", err)
	}
}

func TestConnectPeerAfterClose(t *testing.T) {
	_, path := startFake(t, nil)
	c := dialT(t, path)
	c.Close()
	if _, err := c.ConnectPeer(testCtx(t), "10.0.0.1:1"); !errors.Is(err, ErrClosed) {
		t.Fatalf("ConnectPeer after Close: %v", err)
	}
}

// A SEND whose caller gave up keeps both its buffers reserved until the engine completed
// it: the response still lands, and only then is the memory handed out again.
func TestAbandonedSendKeepsBuffers(t *testing.T) {
	gate := make(chan struct{})
	_, path := startFake(t, func(e *fakeEngine) { e.SendGate = gate })
	c := dialT(t, path, WithBufferSize(2*4096))
	ctx := testCtx(t)
	opened := false
	defer func() {
		if !opened {
			close(gate)
		}
	}()
	p := connectPeer(t, c, "10.0.0.1:1")
	req, _ := c.AllocBuffer(ctx, 4096)
	resp, err := c.AllocBuffer(ctx, 4096)
	if err != nil {
		t.Fatal(err)
	}
	fillPattern(req.Bytes(), 5)
	want := append([]byte(nil), req.Bytes()...)
	tk, err := c.SubmitSend(ctx, p, ServiceEcho, req, resp)
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := tk.Wait(cctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("wait with a cancelled ctx: %v", err)
	}
	req.Release()
	resp.Release()
	if s := c.Stats().Buffers; s.Allocations != 2 {
		t.Fatalf("buffers of an in-flight SEND freed: %+v", s)
	}
	if _, err := c.TryAllocBuffer(4096); !errors.Is(err, ErrNoBufferSpace) {
		t.Fatalf("buffer reusable while the engine may still write it: %v", err)
	}
	close(gate)
	opened = true
	b, err := c.AllocBuffer(ctx, 2*4096) // waits for the late completion
	if err != nil {
		t.Fatal(err)
	}
	defer b.Release()
	if !bytes.Equal(b.Bytes()[4096:], want) {
		t.Fatal("the late response did not land before the buffers came back")
	}
}

func TestSendRequestChecks(t *testing.T) {
	_, path := startFake(t, nil)
	c := dialT(t, path)
	other := dialT(t, path)
	ctx := testCtx(t)
	p := connectPeer(t, c, "10.0.0.1:1")
	buf, err := c.AllocBuffer(ctx, 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Release()
	foreign, err := other.AllocBuffer(ctx, 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer foreign.Release()

	r := SendRequest(p, ServiceEcho, buf, buf)
	if r.Opcode != OpSend || r.Peer != uint32(p) || r.Aux != ServiceEcho || r.BufLen != 4096 || r.Args != [4]uint64{0, 4096, 0, 0} {
		t.Fatalf("SendRequest %+v", r)
	}
	r.Args[0] = 1 // response range 1+4096 outside the buffer
	if _, err := c.Do(ctx, &r); !errors.Is(err, ErrOutOfBounds) {
		t.Fatalf("response range outside Resp: %v", err)
	}
	if _, err := c.Send(ctx, p, ServiceEcho, foreign, buf); err == nil || !strings.Contains(err.Error(), "another session") {
		t.Fatalf("request buffer of another session: %v", err)
	}
	if _, err := c.Send(ctx, p, ServiceEcho, buf, foreign); err == nil || !strings.Contains(err.Error(), "another session") {
		t.Fatalf("response buffer of another session: %v", err)
	}
	if s := c.Stats(); s.Submitted != 0 || s.Buffers.Allocations != 1 {
		t.Fatalf("refused requests were submitted or pinned: %+v", s)
	}
	// Without Resp, Args go as they are: the response range is relative to the area.
	fillPattern(buf.Bytes()[:100], 1)
	r = Request{Opcode: OpSend, Peer: uint32(p), Aux: ServiceEcho, Buf: buf, BufLen: 100, Args: [4]uint64{buf.Offset() + 1000, 100}}
	if n, err := c.Do(ctx, &r); n != 100 || err != nil || !bytes.Equal(buf.Bytes()[1000:1100], buf.Bytes()[:100]) {
		t.Fatalf("raw SEND: %d, %v", n, err)
	}
}

func TestBufferSlice(t *testing.T) {
	p := newTestPool(4)
	b, err := p.tryAlloc(3 * 4096)
	if err != nil {
		t.Fatal(err)
	}
	s := b.Slice(5000, 100)
	if s.Len() != 100 || s.Offset() != b.Offset()+5000 || &s.Bytes()[0] != &b.Bytes()[5000] || cap(s.Bytes()) != 100 {
		t.Fatalf("slice len %d offset %d (buffer at %d)", s.Len(), s.Offset(), b.Offset())
	}
	ss := s.Slice(10, 0)
	if ss.Len() != 0 || ss.Offset() != b.Offset()+5010 || !ss.Valid() {
		t.Fatalf("slice of a slice: len %d offset %d", ss.Len(), ss.Offset())
	}
	if e := b.Slice(b.Len(), 0); e.Offset() != b.Offset()+uint64(b.Len()) {
		t.Fatal("empty slice at the end")
	}
	// A request pinning a slice keeps the whole allocation.
	s.pin()
	b.Release()
	if st := p.stats(); st.Allocations != 1 {
		t.Fatalf("allocation freed under a pinned slice: %+v", st)
	}
	s.unpin()
	if st := p.stats(); st.Allocations != 0 || st.InUse != 0 {
		t.Fatalf("allocation not freed: %+v", st)
	}
	for _, c := range [][2]int{{-1, 1}, {0, 3*4096 + 1}, {3 * 4096, 1}, {1, -1}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Slice(%d, %d) did not panic", c[0], c[1])
				}
			}()
			b.Slice(c[0], c[1])
		}()
	}
}

func TestResultErrorsRemote(t *testing.T) {
	for _, c := range []struct {
		code int32
		err  ResultError
		name string
	}{{-6, ErrNoSuchPeer, "no-such-peer"}, {-7, ErrPeerFailed, "peer-failed"}, {-8, ErrTimedOut, "timed-out"},
		{-9, ErrResponseTooLarge, "response-too-large"}, {-10, ErrUnknownService, "unknown-service"}} {
		err := resultError(c.code)
		if !errors.Is(err, c.err) || errors.Is(err, ErrEngineUnavailable) || !strings.Contains(err.Error(), c.name) {
			t.Errorf("result %d: %v", c.code, err)
		}
	}
	if err := (&PeerError{Addr: "x", Code: CtlShuttingDown}); !errors.Is(err, ErrEngineUnavailable) || errors.Is(err, ErrBadPeerAddress) {
		t.Errorf("PeerError shutting-down: %v", err)
	}
}
