package fakeengine

import (
	"net"
	"net/netip"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/seaweed-ring/seaweed-ring/go-client/internal/wire"
	"golang.org/x/sys/unix"
)

// Engine is a small Go implementation of the engine side of the protocol (SPEC.md),
// used to test the client without the Rust engine: control socket, memfd region, doorbell pipes,
// a polling worker per session with the CQ admission rule, NOP, FILL, SEND (every peer
// from ConnectPeer echoes, in place) and READ_NEEDLE (every peer serves what Needles
// answers), Close, Ping, shutdown with Draining/Closed. It runs in-process or, for
// kill/restart tests, in a child process (the test binary re-executed with
// SWRING_FAKE_ENGINE set; see ChildMain).
//
// Set the exported fields before Start.
type Engine struct {
	path string
	ln   *net.UnixListener
	// Ring and buffer sizes of sessions that ask for the engine's defaults.
	SQ, CQ  uint32
	BufSize uint64
	// LeaseMs is the header's lease_ms (0: no lease).
	LeaseMs uint32
	// Spin is how long an idle worker polls before it sleeps on the SQ doorbell.
	Spin time.Duration
	// OpDelay is an artificial latency per request, to build up load.
	OpDelay time.Duration
	// When set, ConnectPeer replies and SEND executions wait until they are closed.
	PeerGate, SendGate chan struct{}

	mu       sync.Mutex
	sessions map[*fakeSession]struct{}
	nextID   uint32
	closing  bool
	peers    map[netip.AddrPort]uint32 // ConnectPeer handles, engine-wide like the real engine's
	peerList []netip.AddrPort          // the address of handle h at h-1
	wg       sync.WaitGroup

	// Needles answers READ_NEEDLEs (nil: none, every read is no-such-volume).
	Needles NeedleServer
	// NeedleReads counts executed READ_NEEDLEs; MaxNeedlePass is the most taken in one
	// worker pass (requests in flight together).
	NeedleReads, MaxNeedlePass atomic.Int64

	// CorruptHeader, when set, edits every new session's header before it turns Ready
	// (header-validation tests).
	CorruptHeader func(r wire.Region)
}

// NeedleServer serves the READ_NEEDLEs of an Engine. The engine has validated e (flags,
// buffer bounds, peer handle) in the order of ring-proto validate.rs; ServeNeedle answers
// like the engine's needle path: the metadata at the start of buf, the data at
// NeedleMetaLen, and the number of data bytes; or a negative result code. peer is the
// address the SQE's peer handle was registered for. It runs on a session worker.
type NeedleServer interface {
	ServeNeedle(peer netip.AddrPort, e *wire.SQE, buf []byte) int32
}

// New returns an engine that will listen on the control socket path (Start).
func New(path string) *Engine {
	return &Engine{path: path, SQ: 64, CQ: 128, BufSize: 1 << 20, Spin: 200 * time.Microsecond, sessions: map[*fakeSession]struct{}{}, peers: map[netip.AddrPort]uint32{}}
}

func (e *Engine) Start() error {
	os.Remove(e.path)
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: e.path, Net: "unixpacket"})
	if err != nil {
		return err
	}
	e.ln = ln
	e.wg.Add(1)
	go e.serve()
	return nil
}

func (e *Engine) serve() {
	defer e.wg.Done()
	for {
		conn, err := e.ln.AcceptUnix()
		if err != nil {
			return
		}
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			e.session(conn)
		}()
	}
}

// shutdown is the engine's SIGTERM path: Draining, final pass, Closed(EngineShutdown).
func (e *Engine) Shutdown() {
	e.mu.Lock()
	e.closing = true
	ss := make([]*fakeSession, 0, len(e.sessions))
	for s := range e.sessions {
		ss = append(ss, s)
	}
	e.mu.Unlock()
	e.ln.Close()
	for _, s := range ss {
		s.stop.CompareAndSwap(0, 2)
		s.kick()
	}
	e.wg.Wait()
}

func sendError(conn *net.UnixConn, code uint32, text string) {
	conn.Write((&wire.Message{Kind: wire.KindError, Code: code, Text: text}).Encode(nil))
}

func (e *Engine) session(conn *net.UnixConn) {
	defer conn.Close()
	buf := make([]byte, wire.MaxMessage)
	n, err := conn.Read(buf)
	if err != nil {
		return
	}
	m, err := wire.DecodeMessage(buf[:n])
	if err != nil {
		code := wire.CtlErrMalformed
		if de, ok := err.(*wire.DecodeError); ok && de.Version {
			code = wire.CtlErrVersionMismatch
		}
		sendError(conn, code, err.Error())
		return
	}
	if m.Kind != wire.KindHello {
		sendError(conn, wire.CtlErrMalformed, "first message must be hello")
		return
	}
	if m.LayoutVersion != wire.LayoutVersion {
		sendError(conn, wire.CtlErrVersionMismatch, "layout version")
		return
	}
	sqn, cqn, bs := e.SQ, e.CQ, e.BufSize
	if m.SQEntries != 0 {
		sqn = m.SQEntries
	}
	if m.CQEntries != 0 {
		cqn = m.CQEntries
	}
	if m.BufSize != 0 {
		bs = m.BufSize
	}
	l, err := wire.NewLayout(sqn, cqn, bs)
	if err != nil {
		sendError(conn, wire.CtlErrBadRequest, err.Error())
		return
	}
	e.mu.Lock()
	if e.closing {
		e.mu.Unlock()
		sendError(conn, wire.CtlErrShuttingDown, "shutting down")
		return
	}
	e.nextID++
	id := e.nextID
	e.mu.Unlock()

	memfd, err := unix.MemfdCreate("swring-fake", unix.MFD_CLOEXEC)
	if err != nil {
		sendError(conn, wire.CtlErrRegionUnavailable, err.Error())
		return
	}
	defer unix.Close(memfd)
	size := l.MinRegionSize
	if err := unix.Ftruncate(memfd, int64(size)); err != nil {
		sendError(conn, wire.CtlErrRegionUnavailable, err.Error())
		return
	}
	mem, err := unix.Mmap(memfd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		sendError(conn, wire.CtlErrRegionUnavailable, err.Error())
		return
	}
	defer unix.Munmap(mem)
	reg := wire.NewRegion(mem)
	wire.WriteHeader(reg, l, size, uint32(os.Getpid()), id, uint64(time.Now().UnixNano()), e.LeaseMs)
	// The worker has not polled this session yet: the client's first submission must wake
	// it (SPEC.md §6).
	atomic.StoreUint32(reg.U32(l.SQCtlOffset+wire.CtlFlags), wire.NeedWakeup)
	if e.CorruptHeader != nil {
		e.CorruptHeader(reg)
	}
	// SYNC POINT: Ready last (release).
	atomic.StoreUint32(reg.U32(wire.OffState), uint32(wire.StateReady))

	// Doorbells as the engine makes them (SPEC.md §6): the client gets the SQ pipe's write
	// end and the CQ pipe's read end; this fake keeps the others (its SQ read end blocking,
	// so it can sleep in read).
	var sqPipe, cqPipe [2]int
	unix.Pipe2(sqPipe[:], unix.O_CLOEXEC)
	unix.Pipe2(cqPipe[:], unix.O_CLOEXEC|unix.O_NONBLOCK)
	for _, fd := range []int{sqPipe[0], sqPipe[1], cqPipe[0], cqPipe[1]} {
		defer unix.Close(fd)
	}
	wfd, sfd := sqPipe[1], cqPipe[0]
	s := &fakeSession{
		e: e, conn: conn, mem: mem, reg: reg, l: l, sqBellRead: sqPipe[0], sqBellWrite: sqPipe[1], cqBellWrite: cqPipe[1],
		sq:   wire.Consumer{Ring: wire.NewRing("sq", reg, l.SQCtlOffset, l.SQArrayOffset, l.SQEntries, wire.SQEWords)},
		cq:   wire.Producer{Ring: wire.NewRing("cq", reg, l.CQCtlOffset, l.CQArrayOffset, l.CQEntries, wire.CQEWords)},
		done: make(chan struct{}),
	}
	welcome := (&wire.Message{Kind: wire.KindWelcome, SessionID: id, Worker: 0, RegionSize: size}).Encode(nil)
	if _, _, err := conn.WriteMsgUnix(welcome, unix.UnixRights(memfd, wfd, sfd), nil); err != nil {
		return
	}
	e.mu.Lock()
	e.sessions[s] = struct{}{}
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		delete(e.sessions, s)
		e.mu.Unlock()
	}()

	go s.readControl()
	reason := s.work()
	if reason != wire.CloseNone {
		atomic.StoreUint32(reg.U32(wire.OffCloseReason), uint32(reason))
		atomic.StoreUint32(reg.U32(wire.OffState), uint32(wire.StateClosed))
		s.signalClient()
		if reason == wire.CloseClientClosed {
			conn.Write((&wire.Message{Kind: wire.KindClosed}).Encode(nil))
		}
	}
	conn.Close()
	<-s.done
}

// ChildMain lets a test binary act as a fake engine process (for SIGKILL and restart
// tests): with SWRING_FAKE_ENGINE=<socket path> set, it serves that socket until SIGTERM or
// SIGINT and exits; otherwise it returns at once. Call it first in TestMain.
func ChildMain() {
	path := os.Getenv("SWRING_FAKE_ENGINE")
	if path == "" {
		return
	}
	e := New(path)
	if d, err := time.ParseDuration(os.Getenv("SWRING_FAKE_DELAY")); err == nil {
		e.OpDelay = d
	}
	if err := e.Start(); err != nil {
		os.Stderr.WriteString("fake engine: " + err.Error() + "\n")
		os.Exit(2)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	e.Shutdown()
	os.Exit(0)
}
