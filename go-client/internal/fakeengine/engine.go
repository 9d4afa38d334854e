package fakeengine

import (
	"math"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
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

type fakeSession struct {
	e           *Engine
	conn        *net.UnixConn
	mem         []byte
	reg         wire.Region
	l           wire.Layout
	sqBellRead  int // the fake worker sleeps reading this
	sqBellWrite int // for kick (the client has its own descriptor of this end)
	cqBellWrite int
	sq          wire.Consumer
	cq          wire.Producer
	stop        atomic.Int32 // 1: client close, 2: engine shutdown, 3: connection gone
	done        chan struct{}
	processed   atomic.Uint64
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

func (s *fakeSession) readControl() {
	defer close(s.done)
	buf := make([]byte, wire.MaxMessage)
	for {
		n, err := s.conn.Read(buf)
		if err != nil || n == 0 {
			s.stop.CompareAndSwap(0, 3)
			s.kick()
			return
		}
		m, err := wire.DecodeMessage(buf[:n])
		if err != nil {
			continue
		}
		switch m.Kind {
		case wire.KindPing:
			s.conn.Write((&wire.Message{Kind: wire.KindPong}).Encode(nil))
		case wire.KindClose:
			s.stop.CompareAndSwap(0, 1)
			s.kick()
		case wire.KindConnectPeer:
			if s.e.PeerGate != nil {
				<-s.e.PeerGate
			}
			a, err := netip.ParseAddrPort(m.Addr)
			if err != nil {
				// Like the real engine: refuse the address, keep the session.
				sendError(s.conn, wire.CtlErrBadRequest, "peer address "+strconv.Quote(m.Addr)+" is not ip:port")
				continue
			}
			s.e.mu.Lock()
			h, ok := s.e.peers[a]
			if !ok {
				h = uint32(len(s.e.peers) + 1)
				s.e.peers[a] = h
				s.e.peerList = append(s.e.peerList, a)
			}
			s.e.mu.Unlock()
			s.conn.Write((&wire.Message{Kind: wire.KindPeerConnected, Peer: h}).Encode(nil))
		}
	}
}

func (s *fakeSession) kick() {
	unix.Write(s.sqBellWrite, []byte{1})
}

func (s *fakeSession) signalClient() {
	unix.Write(s.cqBellWrite, []byte{1})
}

// pass takes every SQE it can reserve a CQ slot for, executes it and publishes the
// completions. It returns how many it handled.
func (s *fakeSession) pass(failAll bool) int {
	ready, err := s.sq.Refresh()
	if err != nil {
		return -1
	}
	free, err := s.cq.Refresh()
	if err != nil {
		return -1
	}
	n := min(ready, free)
	needles := int64(0)
	for i := uint32(0); i < n; i++ {
		e := s.sq.PopSQE()
		if e.Opcode == wire.OpReadNeedle {
			needles++
		}
		res := int32(0)
		if failAll {
			res = wire.ResShuttingDown
		} else {
			if s.e.OpDelay > 0 {
				time.Sleep(s.e.OpDelay)
			}
			res = s.execute(&e)
		}
		s.cq.PushCQE(wire.CQE{UserData: e.UserData, Result: res})
	}
	for m := s.e.MaxNeedlePass.Load(); needles > m && !s.e.MaxNeedlePass.CompareAndSwap(m, needles); m = s.e.MaxNeedlePass.Load() {
	}
	if n > 0 {
		s.sq.Release()
		if s.cq.Publish() {
			s.signalClient()
		}
		s.processed.Add(uint64(n))
	}
	return int(n)
}

func (s *fakeSession) execute(e *wire.SQE) int32 {
	switch e.Opcode {
	case wire.OpNop:
		if e.Flags != 0 || e.Reserved != 0 || e.Peer != 0 || e.BufOffset != 0 || e.BufLen != 0 || e.Aux != 0 || e.Args != [4]uint64{} {
			atomic.AddUint32(s.sq.Ctl.Invalid, 1)
			return wire.ResInvalidEntry
		}
		return 0
	case wire.OpFill:
		if e.Flags != 0 || e.Reserved != 0 || e.Peer != 0 || e.Args != [4]uint64{} {
			atomic.AddUint32(s.sq.Ctl.Invalid, 1)
			return wire.ResInvalidEntry
		}
		end := e.BufOffset + uint64(e.BufLen)
		if end < e.BufOffset || end > s.l.BufSize {
			atomic.AddUint32(s.sq.Ctl.Invalid, 1)
			return wire.ResOutOfBounds
		}
		b := s.reg.Bytes(s.l.BufOffset+e.BufOffset, uint64(e.BufLen))
		for i := range b {
			b[i] = byte(e.Aux)
		}
		return int32(e.BufLen)
	case wire.OpSend:
		// Validation in the order of engine/src/ops.rs, then the data plane's checks; every
		// peer answers the echo service in place (no UCX here).
		if e.Flags != 0 || e.Reserved != 0 || e.Args[2] != 0 || e.Args[3] != 0 || e.Args[1] > 1<<31-1 {
			atomic.AddUint32(s.sq.Ctl.Invalid, 1)
			return wire.ResInvalidEntry
		}
		if e.Peer == 0 {
			return wire.ResNoSuchPeer
		}
		end, rend := e.BufOffset+uint64(e.BufLen), e.Args[0]+e.Args[1]
		if end < e.BufOffset || end > s.l.BufSize || rend < e.Args[0] || rend > s.l.BufSize {
			atomic.AddUint32(s.sq.Ctl.Invalid, 1)
			return wire.ResOutOfBounds
		}
		s.e.mu.Lock()
		known := e.Peer <= uint32(len(s.e.peers))
		s.e.mu.Unlock()
		switch {
		case !known:
			return wire.ResNoSuchPeer
		case e.Aux != wire.ServiceEcho:
			return wire.ResUnknownService
		case uint64(e.BufLen) > e.Args[1]:
			return wire.ResResponseTooLarge
		}
		if s.e.SendGate != nil {
			<-s.e.SendGate
		}
		copy(s.reg.Bytes(s.l.BufOffset+e.Args[0], uint64(e.BufLen)), s.reg.Bytes(s.l.BufOffset+e.BufOffset, uint64(e.BufLen)))
		return int32(e.BufLen)
	case wire.OpReadNeedle:
		return s.readNeedle(e)
	}
	atomic.AddUint32(s.sq.Ctl.Invalid, 1)
	return wire.ResUnknownOpcode
}

// readNeedle validates a READ_NEEDLE in the order of ring-proto validate.rs, then serves it
// from the engine's needle store like the engine's needle path: metadata at the buffer's
// start, data at NeedleMetaLen, result = data bytes.
func (s *fakeSession) readNeedle(e *wire.SQE) int32 {
	ranged := e.Flags&wire.FlagReadNeedleRange != 0
	if e.Flags&^wire.FlagReadNeedleRange != 0 || e.Reserved != 0 || e.Args[1] > math.MaxUint32 ||
		(!ranged && (e.Args[2] != 0 || e.Args[3] != 0)) || e.BufLen > math.MaxInt32 || e.BufLen < wire.NeedleMetaLen {
		atomic.AddUint32(s.sq.Ctl.Invalid, 1)
		return wire.ResInvalidEntry
	}
	if e.Peer == 0 {
		return wire.ResNoSuchPeer
	}
	end := e.BufOffset + uint64(e.BufLen)
	dataCap := uint64(e.BufLen) - wire.NeedleMetaLen
	if end < e.BufOffset || end > s.l.BufSize || (ranged && e.Args[3] > dataCap) {
		atomic.AddUint32(s.sq.Ctl.Invalid, 1)
		return wire.ResOutOfBounds
	}
	s.e.NeedleReads.Add(1)
	s.e.mu.Lock()
	var addr netip.AddrPort
	known := e.Peer <= uint32(len(s.e.peerList))
	if known {
		addr = s.e.peerList[e.Peer-1]
	}
	s.e.mu.Unlock()
	if !known {
		return wire.ResNoSuchPeer
	}
	if s.e.Needles == nil {
		return wire.ResNoSuchVolume
	}
	return s.e.Needles.ServeNeedle(addr, e, s.reg.Bytes(s.l.BufOffset+e.BufOffset, uint64(e.BufLen)))
}

// work polls the session until it stops, and returns the close reason to publish.
func (s *fakeSession) work() wire.CloseReason {
	idleSince := time.Now()
	for {
		switch s.stop.Load() {
		case 1: // client Close: complete everything accepted, and what is in the SQ
			for s.pass(false) > 0 {
			}
			return wire.CloseClientClosed
		case 2: // engine shutdown
			atomic.StoreUint32(s.reg.U32(wire.OffState), uint32(wire.StateDraining))
			s.signalClient()
			deadline := time.Now().Add(2 * time.Second)
			for {
				n := s.pass(true)
				if n < 0 || (n == 0 && s.sqEmpty()) || time.Now().After(deadline) {
					break
				}
			}
			return wire.CloseEngineShutdown
		case 3:
			return wire.CloseNone
		}
		n := s.pass(false)
		if n < 0 {
			atomic.StoreUint32(s.reg.U32(wire.OffCloseReason), uint32(wire.CloseBadSqTail))
			atomic.StoreUint32(s.reg.U32(wire.OffState), uint32(wire.StateBroken))
			s.signalClient()
			return wire.CloseNone
		}
		if n > 0 {
			idleSince = time.Now()
			continue
		}
		if time.Since(idleSince) < s.e.Spin {
			continue
		}
		// Sleep: NEED_WAKEUP on the SQ, recheck "entries ready and CQ room" (like the Rust
		// engine, this worker also sleeps on a full CQ), block on the SQ doorbell.
		atomic.StoreUint32(s.sq.Ctl.Flags, wire.NeedWakeup)
		r, _ := s.sq.Refresh()
		room, _ := s.cq.Refresh()
		if (r == 0 || room == 0) && s.stop.Load() == 0 {
			var b [64]byte
			unix.Read(s.sqBellRead, b[:])
		}
		atomic.StoreUint32(s.sq.Ctl.Flags, 0)
		idleSince = time.Now()
	}
}

func (s *fakeSession) sqEmpty() bool {
	r, err := s.sq.Refresh()
	return err != nil || r == 0
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
