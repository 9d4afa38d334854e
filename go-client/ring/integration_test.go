package ring

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/seaweed-ring/seaweed-ring/go-client/internal/enginectl"
)

// Integration tests run the same scenarios against engine processes:
//   - "fake": this test binary re-executed as the Go fake engine (always available);
//   - "rust": the real engine binary, from $SWRING_ENGINE or the repository's target/debug/engine (build it
//     with `cargo build -p engine`); skipped with a message when neither exists.

type engineProc struct {
	t      testing.TB
	kind   string
	dir    string
	sock   string
	bin    string
	cmd    *exec.Cmd
	exited chan struct{}
	mu     sync.Mutex
	// ucx: the engine serves remote requests; peerAddr is its UCX listener address, for
	// ConnectPeer (the engine serves its own listener). The fake engine echoes for any
	// address.
	ucx      bool
	peerAddr string
}

func forEachEngine(t *testing.T, f func(t *testing.T, e *engineProc)) {
	forEachEngineOpts(t, false, f)
}

// forEachEngineUCX is forEachEngine with the real engine listening for remote requests on
// 127.0.0.1 (UCX over tcp on lo); e.peerAddr is that listener.
func forEachEngineUCX(t *testing.T, f func(t *testing.T, e *engineProc)) {
	forEachEngineOpts(t, true, f)
}

func forEachEngineOpts(t *testing.T, ucx bool, f func(t *testing.T, e *engineProc)) {
	for _, kind := range []string{"fake", "rust"} {
		t.Run(kind, func(t *testing.T) {
			e := &engineProc{t: t, kind: kind, dir: shortTempDir(t), ucx: ucx}
			e.sock = filepath.Join(e.dir, "engine.sock")
			if kind == "rust" {
				bin, ok := rustEngineBinary()
				if !ok {
					t.Skip("real engine not found: set SWRING_ENGINE or run `cargo build -p engine` (expects the repository's target/debug/engine)")
				}
				e.bin = bin
				cfg := fmt.Sprintf("[control]\nsocket = %q\n\n[workers]\nidle-spin-us = 200\n\n[memory]\nhugepages = \"off\"\n\n[log]\nlevel = \"warn\"\n", e.sock)
				if err := os.WriteFile(filepath.Join(e.dir, "engine.toml"), []byte(cfg), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			e.start()
			t.Cleanup(e.stop)
			f(t, e)
		})
	}
}

func (e *engineProc) start() {
	e.t.Helper()
	os.Remove(e.sock)
	var cmd *exec.Cmd
	if e.kind == "fake" {
		cmd = exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "SWRING_FAKE_ENGINE="+e.sock)
	} else {
		cmd = exec.Command(e.bin, "--config", filepath.Join(e.dir, "engine.toml"))
	}
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	var ucxAddr chan string
	switch {
	case e.ucx && e.kind == "fake":
		e.peerAddr = "127.0.0.1:1"
	case e.ucx:
		// Port 0: the engine logs the port it bound ("UCX listening address=ip:port"), at
		// info level of engine::dataplane (RUST_LOG wins over the config's level).
		cmd.Args = append(cmd.Args, "--ucx-listen", "127.0.0.1:0", "--ucx-transports", "tcp", "--ucx-net-devices", "lo")
		cmd.Env = append(os.Environ(), "RUST_LOG="+ucxLogFilter)
		ucxAddr = make(chan string, 1)
		cmd.Stderr = &enginectl.LineTap{Out: os.Stderr, Line: func(l string) {
			if a, ok := enginectl.ListeningAddr(l); ok {
				select {
				case ucxAddr <- a:
				default:
				}
			}
		}}
	}
	// Do not outlive a test binary that dies (timeout, panic).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		e.t.Fatalf("start %s engine: %v", e.kind, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	e.mu.Lock()
	e.cmd, e.exited = cmd, exited
	e.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for {
		// The socket file appears at bind(), a moment before listen(): wait for a connect
		// to succeed (the engine sees a connection closed before Hello).
		if conn, err := net.Dial("unixpacket", e.sock); err == nil {
			conn.Close()
			break
		}
		select {
		case <-exited:
			e.t.Fatalf("%s engine exited before creating its socket: %v", e.kind, cmd.ProcessState)
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s engine did not create %s", e.kind, e.sock)
		}
	}
	if ucxAddr != nil {
		// The engine logs the address before it serves its socket; the log copy may lag.
		select {
		case e.peerAddr = <-ucxAddr:
		case <-exited:
			e.t.Fatalf("%s engine exited: %v", e.kind, cmd.ProcessState)
		case <-time.After(time.Until(deadline)):
			e.t.Fatalf("%s engine logged no %q line (RUST_LOG=%s)", e.kind, "UCX listening", ucxLogFilter)
		}
	}
}

const ucxLogFilter = "warn,engine::dataplane=info"

// signal sends sig to the engine process this test started (never anything else) and
// waits until it has exited.
func (e *engineProc) signal(sig syscall.Signal) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cmd == nil || e.cmd.Process == nil || e.cmd.Process.Pid <= 0 {
		return
	}
	e.cmd.Process.Signal(sig)
	select {
	case <-e.exited:
	case <-time.After(20 * time.Second):
		e.t.Errorf("%s engine did not exit after %v", e.kind, sig)
	}
	e.cmd = nil
}

func (e *engineProc) kill() { e.signal(syscall.SIGKILL) }
func (e *engineProc) stop() { e.signal(syscall.SIGKILL) }

func (e *engineProc) dial(t *testing.T, opts ...Option) *Client {
	t.Helper()
	return dialT(t, e.sock, opts...)
}

func TestEngineNop(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *engineProc) {
		c := e.dial(t)
		ctx := testCtx(t)
		for i := 0; i < 1000; i++ {
			if err := c.Nop(ctx); err != nil {
				t.Fatalf("nop %d: %v", i, err)
			}
		}
		if s := c.Stats(); s.Submitted != 1000 || s.Completed != 1000 || s.Stray != 0 {
			t.Fatalf("stats %+v", s)
		}
		if err := c.Ping(ctx); err != nil {
			t.Fatal(err)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestEngineNop64Goroutines(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *engineProc) {
		c := e.dial(t, WithRingSizes(16, 32), WithSpin(20*time.Microsecond))
		exercise64(t, c, 200)
	})
}

func TestEngineFill(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *engineProc) {
		c := e.dial(t)
		ctx := testCtx(t)
		bufs := make([]Buffer, 4)
		for i := range bufs {
			b, err := c.AllocBuffer(ctx, 8192+i)
			if err != nil {
				t.Fatal(err)
			}
			for k := range b.Bytes() {
				b.Bytes()[k] = 0x11
			}
			bufs[i] = b
		}
		for i, b := range bufs {
			n, err := c.Fill(ctx, b, i, 8000, byte(0xa0+i))
			if err != nil || n != 8000 {
				t.Fatalf("fill %d: %d %v", i, n, err)
			}
		}
		for i, b := range bufs {
			for k, v := range b.Bytes() {
				want := byte(0x11)
				if k >= i && k < i+8000 {
					want = byte(0xa0 + i)
				}
				if v != want {
					t.Fatalf("buffer %d byte %d = %#x, want %#x", i, k, v, want)
				}
			}
			b.Release()
		}
		if _, err := c.Do(ctx, &Request{Opcode: OpFill, BufOffset: c.Layout().BufSize, BufLen: 1}); !errors.Is(err, ErrOutOfBounds) {
			t.Fatalf("out of bounds fill: %v", err)
		}
		if _, err := c.Do(ctx, &Request{Opcode: 99}); !errors.Is(err, ErrUnknownOpcode) {
			t.Fatalf("unknown opcode: %v", err)
		}
	})
}

func TestEngineCancelUnderLoad(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *engineProc) {
		c := e.dial(t, WithRingSizes(8, 8))
		ctx := testCtx(t)
		var wg sync.WaitGroup
		var cancelled, ok atomic.Int64
		for g := 0; g < 32; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				for i := 0; i < 100; i++ {
					wctx, cancel := context.WithTimeout(ctx, time.Duration(i%5)*20*time.Microsecond)
					err := c.Nop(wctx)
					cancel()
					switch {
					case err == nil:
						ok.Add(1)
					case errors.Is(err, context.DeadlineExceeded):
						cancelled.Add(1)
					default:
						t.Errorf("nop: %v", err)
						return
					}
				}
			}(g)
		}
		wg.Wait()
		// Every late completion gets reaped: all slots come back, accounting is exact.
		deadline := time.Now().Add(30 * time.Second)
		for {
			s := c.Stats()
			if freeSlots(t, c) == c.MaxInFlight() && s.Completed == s.Submitted {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d/%d slots free, stats %+v", freeSlots(t, c), c.MaxInFlight(), c.Stats())
			}
			time.Sleep(time.Millisecond)
		}
		if err := c.Nop(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("ok %d, cancelled %d", ok.Load(), cancelled.Load())
	})
}

// SIGKILL the engine with requests in flight: every waiter gets ErrEngineUnavailable, then
// the engine is restarted and the client reconnects without restarting this process.
func TestEngineKilledThenRestarted(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *engineProc) {
		c := e.dial(t, WithSpin(10*time.Microsecond))
		ctx := testCtx(t)
		var wg sync.WaitGroup
		var before atomic.Int64
		results := make(chan error, 64)
		for g := 0; g < 32; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				if g%2 == 0 {
					for {
						if err := c.Nop(ctx); err != nil {
							results <- err
							return
						}
						before.Add(1)
					}
				}
				reqs := make([]Request, 16)
				for i := range reqs {
					reqs[i].Opcode = OpNop
				}
				ts := make([]Ticket, 16)
				for {
					n, err := c.SubmitBatch(ctx, reqs, ts)
					var werr error
					for _, tk := range ts[:n] {
						if _, err := tk.Wait(ctx); err != nil && werr == nil {
							werr = err
						}
					}
					if err != nil || werr != nil {
						results <- errors.Join(err, werr)
						return
					}
					before.Add(int64(n))
				}
			}(g)
		}
		for before.Load() < 2000 {
			time.Sleep(time.Millisecond)
		}
		e.kill()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatal("waiters still blocked 30s after the engine was killed")
		}
		close(results)
		for err := range results {
			if !errors.Is(err, ErrEngineUnavailable) {
				t.Errorf("waiter got %v, want ErrEngineUnavailable", err)
			}
		}
		if err := c.Nop(ctx); !errors.Is(err, ErrEngineUnavailable) {
			t.Fatalf("nop on a dead engine: %v", err)
		}
		select {
		case <-c.Done():
		default:
			t.Fatal("Done not closed")
		}
		if _, err := Dial(ctx, e.sock); !errors.Is(err, ErrEngineUnavailable) {
			t.Fatalf("dial with no engine: %v", err)
		}

		e.start()
		c2, err := c.Reconnect(ctx)
		if err != nil {
			t.Fatalf("reconnect: %v", err)
		}
		defer c2.Close()
		for i := 0; i < 100; i++ {
			if err := c2.Nop(ctx); err != nil {
				t.Fatalf("nop after reconnect: %v", err)
			}
		}
		t.Logf("%d requests before the kill", before.Load())
	})
}

// The real engine with a 1 s lease: an idle client (no request, no control message) keeps
// its session for 4 s, four leases, by its heartbeat alone, and a NOP then completes. (The
// fake engine's TestLeaseHeartbeat only sees the counter move.)
func TestEngineLeaseKeptByHeartbeat(t *testing.T) {
	bin, ok := rustEngineBinary()
	if !ok {
		t.Skip("real engine not found: set SWRING_ENGINE or run `cargo build -p engine` (expects the repository's target/debug/engine)")
	}
	e := &engineProc{t: t, kind: "rust", bin: bin, dir: shortTempDir(t)}
	e.sock = filepath.Join(e.dir, "engine.sock")
	cfg := fmt.Sprintf("[control]\nsocket = %q\n\n[sessions]\nlease-ms = 1000\n\n[memory]\nhugepages = \"off\"\n\n[log]\nlevel = \"warn\"\n", e.sock)
	if err := os.WriteFile(filepath.Join(e.dir, "engine.toml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	e.start()
	t.Cleanup(e.stop)
	c := e.dial(t)
	if c.leaseMs != 1000 {
		t.Fatalf("the engine's lease is %d ms, want the configured 1000", c.leaseMs)
	}
	time.Sleep(4 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Nop(ctx); err != nil {
		t.Fatalf("NOP after four idle leases: %v (the engine ended the session: its heartbeat did not keep it)", err)
	}
}

// SIGTERM: the engine drains (Draining, final pass, Closed) and exits; every waiter ends
// with a result or ErrEngineUnavailable.
func TestEngineGracefulShutdown(t *testing.T) {
	forEachEngine(t, func(t *testing.T, e *engineProc) {
		c := e.dial(t)
		ctx := testCtx(t)
		var wg sync.WaitGroup
		var n atomic.Int64
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					err := c.Nop(ctx)
					if err != nil {
						if !errors.Is(err, ErrEngineUnavailable) {
							t.Errorf("nop: %v", err)
						}
						return
					}
					n.Add(1)
				}
			}()
		}
		for n.Load() < 500 {
			time.Sleep(time.Millisecond)
		}
		e.signal(syscall.SIGTERM)
		wg.Wait()
		if err := c.Err(); !errors.Is(err, ErrEngineUnavailable) {
			t.Fatalf("Err after shutdown: %v", err)
		}
		s := c.Stats()
		if s.Completed != s.Submitted {
			t.Logf("stats %+v", s)
		}
	})
}
