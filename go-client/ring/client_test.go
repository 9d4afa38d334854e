package ring

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seaweed-ring/seaweed-ring/go-client/internal/wire"
)

func dialT(t testing.TB, path string, opts ...Option) *Client {
	t.Helper()
	c, err := Dial(testCtx(t), path, opts...)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestDialNoEngine(t *testing.T) {
	_, err := Dial(testCtx(t), filepath.Join(shortTempDir(t), "none.sock"))
	if !errors.Is(err, ErrEngineUnavailable) {
		t.Fatalf("got %v, want ErrEngineUnavailable", err)
	}
}

func TestDefaultSocketPath(t *testing.T) {
	t.Setenv("XDG_RUNTIME_DIR", "/run/user/7")
	if p := DefaultSocketPath(); p != "/run/user/7/seaweed-ring/engine.sock" {
		t.Fatal(p)
	}
	t.Setenv("XDG_RUNTIME_DIR", "")
	if p := DefaultSocketPath(); filepath.Base(filepath.Dir(p)) == "" || filepath.Base(p) != "engine.sock" {
		t.Fatal(p)
	}
}

// A listener that answers Hello with a fixed packet.
func fakeResponder(t *testing.T, reply []byte) string {
	path := filepath.Join(shortTempDir(t), "r.sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			buf := make([]byte, 512)
			c.Read(buf)
			if reply != nil {
				c.Write(reply)
			}
			c.Close()
		}
	}()
	return path
}

func TestDialErrors(t *testing.T) {
	ctx := testCtx(t)
	_, err := Dial(ctx, fakeResponder(t, (&wire.Message{Kind: wire.KindError, Code: uint32(CtlVersionMismatch), Text: "layout 2"}).Encode(nil)))
	var ce *ControlError
	if !errors.Is(err, ErrVersionMismatch) || !errors.As(err, &ce) || ce.Message != "layout 2" {
		t.Errorf("version mismatch: %v", err)
	}
	v2 := (&wire.Message{Kind: wire.KindPong}).Encode(nil)
	v2[4] = 3
	if _, err := Dial(ctx, fakeResponder(t, v2)); !errors.Is(err, ErrVersionMismatch) {
		t.Errorf("control version 3: %v", err)
	}
	if _, err := Dial(ctx, fakeResponder(t, (&wire.Message{Kind: wire.KindError, Code: uint32(CtlTooManySessions)}).Encode(nil))); !errors.As(err, &ce) || ce.Code != CtlTooManySessions {
		t.Errorf("too many sessions: %v", err)
	}
	if _, err := Dial(ctx, fakeResponder(t, nil)); !errors.Is(err, ErrEngineUnavailable) {
		t.Errorf("closed without answer: %v", err)
	}
	// Welcome without fds.
	if _, err := Dial(ctx, fakeResponder(t, (&wire.Message{Kind: wire.KindWelcome, RegionSize: 1 << 20}).Encode(nil))); !errors.Is(err, ErrProtocol) {
		t.Errorf("welcome without fds: %v", err)
	}
	// Malformed region.
	_, path := startFake(t, func(e *fakeEngine) {
		e.CorruptHeader = func(r wire.Region) { *r.U32(wire.OffCqArrayOffset) += 128 }
	})
	if _, err := Dial(ctx, path); !errors.Is(err, ErrRegionMalformed) {
		t.Errorf("corrupt header: %v", err)
	}
	_, path = startFake(t, func(e *fakeEngine) {
		e.CorruptHeader = func(r wire.Region) { *r.U32(wire.OffVersion) = wire.LayoutVersion + 1 }
	})
	if _, err := Dial(ctx, path); !errors.Is(err, ErrVersionMismatch) {
		t.Errorf("layout version %d: %v", wire.LayoutVersion+1, err)
	}
	// Bad sizes requested: the engine refuses.
	_, path = startFake(t, nil)
	if _, err := Dial(ctx, path, WithRingSizes(3, 4)); !errors.As(err, &ce) || ce.Code != CtlBadRequest {
		t.Errorf("bad ring size: %v", err)
	}
	// Cancelled context.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := Dial(cctx, path); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled dial: %v", err)
	}
}

func TestNopSingle(t *testing.T) {
	_, path := startFake(t, nil)
	c := dialT(t, path)
	ctx := testCtx(t)
	for i := 0; i < 2000; i++ {
		if err := c.Nop(ctx); err != nil {
			t.Fatalf("nop %d: %v", i, err)
		}
	}
	if s := c.Stats(); s.Submitted != 2000 || s.Completed != 2000 || s.Stray != 0 {
		t.Fatalf("stats %+v", s)
	}
	if err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
}

// exercise64 runs NOPs from 64 goroutines, mixing sync, async and batched submission, and
// checks every request completed exactly once.
func exercise64(t *testing.T, c *Client, perG int) {
	ctx := testCtx(t)
	var wg sync.WaitGroup
	var ok atomic.Int64
	for g := 0; g < 64; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			switch g % 3 {
			case 0:
				for i := 0; i < perG; i++ {
					if err := c.Nop(ctx); err != nil {
						t.Errorf("nop: %v", err)
						return
					}
					ok.Add(1)
				}
			case 1:
				ts := make([]Ticket, 0, 8)
				for i := 0; i < perG; i++ {
					tk, err := c.Submit(ctx, &Request{Opcode: OpNop})
					if err != nil {
						t.Errorf("submit: %v", err)
						return
					}
					ts = append(ts, tk)
					if len(ts) == cap(ts) || i == perG-1 {
						for _, tk := range ts {
							if _, err := tk.Wait(ctx); err != nil {
								t.Errorf("wait: %v", err)
								return
							}
							ok.Add(1)
						}
						ts = ts[:0]
					}
				}
			case 2:
				reqs := make([]Request, 10)
				for i := range reqs {
					reqs[i].Opcode = OpNop
				}
				ts := make([]Ticket, len(reqs))
				for i := 0; i < perG; i += len(reqs) {
					n, err := c.SubmitBatch(ctx, reqs, ts)
					if err != nil {
						t.Errorf("batch: %v", err)
						return
					}
					for _, tk := range ts[:n] {
						if _, err := tk.Wait(ctx); err != nil {
							t.Errorf("wait: %v", err)
							return
						}
						ok.Add(1)
					}
				}
			}
		}(g)
	}
	wg.Wait()
	s := c.Stats()
	if int64(s.Submitted) != ok.Load() || s.Completed != s.Submitted || s.Stray != 0 {
		t.Fatalf("accounting: %d waits succeeded, stats %+v", ok.Load(), s)
	}
}

func TestNop64Goroutines(t *testing.T) {
	_, path := startFake(t, nil)
	c := dialT(t, path, WithRingSizes(16, 32), WithSpin(10*time.Microsecond))
	exercise64(t, c, 300)
}

func TestFillCheckedByteByByte(t *testing.T) {
	_, path := startFake(t, nil)
	c := dialT(t, path)
	ctx := testCtx(t)
	buf, err := c.AllocBuffer(ctx, 10000)
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Release()
	b := buf.Bytes()
	for i := range b {
		b[i] = 0xee
	}
	n, err := c.Fill(ctx, buf, 100, 5000, 0x5a)
	if err != nil || n != 5000 {
		t.Fatalf("fill: %d %v", n, err)
	}
	for i := range b {
		want := byte(0xee)
		if i >= 100 && i < 5100 {
			want = 0x5a
		}
		if b[i] != want {
			t.Fatalf("byte %d = %#x, want %#x", i, b[i], want)
		}
	}
	// Out of the buffer: refused locally.
	if _, err := c.Fill(ctx, buf, 9000, 2000, 1); !errors.Is(err, ErrOutOfBounds) {
		t.Fatalf("local bounds: %v", err)
	}
	// Out of the buffer area: refused by the engine.
	_, err = c.Do(ctx, &Request{Opcode: OpFill, BufOffset: c.Layout().BufSize - 10, BufLen: 11})
	if !errors.Is(err, ErrOutOfBounds) {
		t.Fatalf("engine bounds: %v", err)
	}
	if _, err := c.Do(ctx, &Request{Opcode: 200}); !errors.Is(err, ErrUnknownOpcode) {
		t.Fatalf("unknown opcode: %v", err)
	}
	if _, err := c.Do(ctx, &Request{Opcode: OpNop, Aux: 1}); !errors.Is(err, ErrInvalidEntry) {
		t.Fatalf("invalid nop: %v", err)
	}
	if s := c.Stats(); s.SQInvalid != 3 {
		t.Fatalf("SQ invalid counter %d, want 3", s.SQInvalid)
	}
}

// Waiters whose context ends get ctx.Err() promptly; the late completions are reaped, the
// buffers they used are not reused before that, and every slot comes back.
func TestCancelUnderLoad(t *testing.T) {
	fe, path := startFake(t, func(e *fakeEngine) { e.OpDelay = 200 * time.Microsecond })
	c := dialT(t, path, WithRingSizes(16, 16))
	ctx := testCtx(t)
	var wg sync.WaitGroup
	var cancelled, completed atomic.Int64
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 30; i++ {
				buf, err := c.AllocBuffer(ctx, 4096)
				if err != nil {
					t.Error(err)
					return
				}
				wctx, cancel := context.WithTimeout(ctx, time.Duration(g%4)*100*time.Microsecond)
				_, err = c.Fill(wctx, buf, 0, 4096, byte(g))
				cancel()
				buf.Release()
				switch {
				case err == nil:
					completed.Add(1)
				case errors.Is(err, context.DeadlineExceeded):
					cancelled.Add(1)
				default:
					t.Errorf("fill: %v", err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	if cancelled.Load() == 0 {
		t.Log("no request was cancelled (machine too fast for the deadlines)")
	}
	// Every abandoned request is eventually reaped: all slots and buffers come back.
	deadline := time.Now().Add(30 * time.Second)
	for {
		s := c.Stats()
		if freeSlots(t, c) == c.MaxInFlight() && s.Buffers.Allocations == 0 && s.Completed == s.Submitted {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("leak: %d/%d slots free, stats %+v", freeSlots(t, c), c.MaxInFlight(), s)
		}
		time.Sleep(time.Millisecond)
	}
	if err := c.Nop(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("completed %d, cancelled %d, engine processed %d", completed.Load(), cancelled.Load(), processed(fe))
}

// A buffer whose request was abandoned is not handed out again until the engine's late
// completion has been reaped.
func TestAbandonedBufferNotReused(t *testing.T) {
	_, path := startFake(t, func(e *fakeEngine) { e.OpDelay = 300 * time.Millisecond })
	c := dialT(t, path, WithBufferSize(4096))
	ctx := testCtx(t)
	buf, err := c.AllocBuffer(ctx, 4096)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Millisecond)
	_, err = c.Fill(wctx, buf, 0, 4096, 7)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("expected a timeout, got %v", err)
	}
	buf.Release()
	if _, err := c.TryAllocBuffer(4096); !errors.Is(err, ErrNoBufferSpace) {
		t.Fatalf("buffer reusable while the engine may still write it: %v", err)
	}
	b2, err := c.AllocBuffer(ctx, 4096) // waits for the late completion
	if err != nil {
		t.Fatal(err)
	}
	if b2.Bytes()[0] != 7 || b2.Bytes()[4095] != 7 {
		t.Fatal("late FILL did not land before the buffer came back")
	}
	b2.Release()
}

func TestCloseWakesWaitersAndIsIdempotent(t *testing.T) {
	_, path := startFake(t, func(e *fakeEngine) { e.OpDelay = 20 * time.Millisecond })
	c := dialT(t, path, WithCloseTimeout(50*time.Millisecond))
	ctx := testCtx(t)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- c.Nop(ctx)
		}()
	}
	time.Sleep(5 * time.Millisecond)
	var cw sync.WaitGroup
	for i := 0; i < 3; i++ {
		cw.Add(1)
		go func() { defer cw.Done(); c.Close() }()
	}
	cw.Wait()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("waiter got %v", err)
		}
	}
	if err := c.Nop(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("nop after close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AllocBuffer(ctx, 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("alloc after close: %v", err)
	}
}

// Buffers outlive Close: the mapping stays until the last one is released.
func TestBufferOutlivesClose(t *testing.T) {
	_, path := startFake(t, nil)
	c := dialT(t, path)
	b, err := c.AllocBuffer(testCtx(t), 100)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	b.Bytes()[99] = 1 // still mapped
	b.Release()
}

func TestEngineShutdownDrains(t *testing.T) {
	fe, path := startFake(t, func(e *fakeEngine) { e.OpDelay = 2 * time.Millisecond })
	c := dialT(t, path)
	ctx := testCtx(t)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				err := c.Nop(ctx)
				if err == nil {
					continue
				}
				if !errors.Is(err, ErrEngineUnavailable) {
					t.Errorf("got %v", err)
				}
				return
			}
		}()
	}
	time.Sleep(20 * time.Millisecond)
	fe.Shutdown()
	wg.Wait()
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("client did not notice the shutdown")
	}
	if err := c.Err(); !errors.Is(err, ErrEngineUnavailable) {
		t.Fatalf("Err() = %v", err)
	}
}

func TestLeaseHeartbeat(t *testing.T) {
	_, path := startFake(t, func(e *fakeEngine) { e.LeaseMs = 20 })
	c := dialT(t, path)
	c.life.RLock()
	p := c.reg.U64(wire.OffClientHeartbeat)
	c.life.RUnlock()
	deadline := time.Now().Add(10 * time.Second)
	for atomicLoad64(p) < 3 {
		if time.Now().After(deadline) {
			t.Fatal("client_heartbeat not bumped")
		}
		time.Sleep(time.Millisecond)
	}
}

func atomicLoad64(p *uint64) uint64 { return atomic.LoadUint64(p) }

func BenchmarkNop(b *testing.B) {
	_, path := startFake(b, func(e *fakeEngine) { e.Spin = time.Second })
	c := dialT(b, path)
	ctx := context.Background()
	req := Request{Opcode: OpNop}
	c.Do(ctx, &req)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Do(ctx, &req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNopBatch32(b *testing.B) {
	_, path := startFake(b, func(e *fakeEngine) { e.Spin = time.Second })
	c := dialT(b, path)
	ctx := context.Background()
	reqs, ts := nopBatch(32)
	b.ReportAllocs()
	for b.Loop() {
		n, err := c.SubmitBatch(ctx, reqs, ts)
		if err != nil {
			b.Fatal(err)
		}
		for _, tk := range ts[:n] {
			if _, err := tk.Wait(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.N*32)/b.Elapsed().Seconds(), "ops/s")
}

// nopBatch returns n NOP requests and room for their tickets.
func nopBatch(n int) ([]Request, []Ticket) {
	reqs := make([]Request, n)
	for i := range reqs {
		reqs[i].Opcode = OpNop
	}
	return reqs, make([]Ticket, n)
}
