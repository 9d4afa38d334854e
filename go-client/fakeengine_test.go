package swring

import (
	"math"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// fakeEngine is a small Go implementation of the engine side of the protocol (SPEC.md),
// used to test the client without the Rust engine: control socket, memfd region, doorbell pipes,
// a polling worker per session with the CQ admission rule, NOP, FILL, SEND (every peer
// from ConnectPeer echoes, in place) and READ_NEEDLE (every peer serves the needles of
// e.needles, see needlestore_test.go), Close, Ping, shutdown with Draining/Closed. It runs
// in-process or, for kill/restart tests, in a child process (the test binary re-executed
// with SWRING_FAKE_ENGINE set; see TestMain).
type fakeEngine struct {
	path    string
	ln      *net.UnixListener
	sq, cq  uint32
	bufSize uint64
	leaseMs uint32
	spin    time.Duration
	opDelay time.Duration // artificial latency per request, to build up load
	// When set, ConnectPeer replies and SEND executions wait until they are closed.
	peerGate, sendGate chan struct{}

	mu       sync.Mutex
	sessions map[*fakeSession]struct{}
	nextID   uint32
	closing  bool
	peers    map[netip.AddrPort]uint32 // ConnectPeer handles, engine-wide like the real engine's
	peerList []netip.AddrPort          // the address of handle h at h-1
	wg       sync.WaitGroup

	// READ_NEEDLE: the needles every peer serves (nil: none, every read is no-such-volume).
	needles *needleStore
	// strictRange: a ranged read starting at the end of the data is range-not-satisfiable
	// (also offset 0 of an empty needle); otherwise only a start beyond the end is.
	strictRange bool
	// needleHook, when set, may answer a READ_NEEDLE itself: a result code (< 0) to
	// return, or 0 to serve it normally. It runs on the session worker. Guarded by mu
	// (setNeedleHook).
	needleHook func(peer netip.AddrPort, fid FileID, e *SQE) int32
	// needleReads counts executed READ_NEEDLEs; maxNeedlePass is the most taken in one
	// worker pass (requests in flight together).
	needleReads, maxNeedlePass atomic.Int64

	// hooks for header-validation tests
	corruptHeader func(r Region)
}

type fakeSession struct {
	e           *fakeEngine
	conn        *net.UnixConn
	mem         []byte
	reg         Region
	l           Layout
	sqBellRead  int // the fake worker sleeps reading this
	sqBellWrite int // for kick (the client has its own descriptor of this end)
	cqBellWrite int
	sq          Consumer
	cq          Producer
	stop        atomic.Int32 // 1: client close, 2: engine shutdown, 3: connection gone
	done        chan struct{}
	processed   atomic.Uint64
}

func newFakeEngine(path string) *fakeEngine {
	return &fakeEngine{path: path, sq: 64, cq: 128, bufSize: 1 << 20, spin: 200 * time.Microsecond, sessions: map[*fakeSession]struct{}{}, peers: map[netip.AddrPort]uint32{}}
}

func (e *fakeEngine) start() error {
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

func (e *fakeEngine) serve() {
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
func (e *fakeEngine) shutdown() {
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

func sendError(conn *net.UnixConn, code ControlErrorCode, text string) {
	conn.Write((&Message{Kind: KindError, Code: uint32(code), Text: text}).Encode(nil))
}

func (e *fakeEngine) session(conn *net.UnixConn) {
	defer conn.Close()
	buf := make([]byte, MaxMessage)
	n, err := conn.Read(buf)
	if err != nil {
		return
	}
	m, err := DecodeMessage(buf[:n])
	if err != nil {
		code := CtlMalformed
		if de, ok := err.(*DecodeError); ok && de.Version {
			code = CtlVersionMismatch
		}
		sendError(conn, code, err.Error())
		return
	}
	if m.Kind != KindHello {
		sendError(conn, CtlMalformed, "first message must be hello")
		return
	}
	if m.LayoutVersion != LayoutVersion {
		sendError(conn, CtlVersionMismatch, "layout version")
		return
	}
	sqn, cqn, bs := e.sq, e.cq, e.bufSize
	if m.SQEntries != 0 {
		sqn = m.SQEntries
	}
	if m.CQEntries != 0 {
		cqn = m.CQEntries
	}
	if m.BufSize != 0 {
		bs = m.BufSize
	}
	l, err := NewLayout(sqn, cqn, bs)
	if err != nil {
		sendError(conn, CtlBadRequest, err.Error())
		return
	}
	e.mu.Lock()
	if e.closing {
		e.mu.Unlock()
		sendError(conn, CtlShuttingDown, "shutting down")
		return
	}
	e.nextID++
	id := e.nextID
	e.mu.Unlock()

	memfd, err := unix.MemfdCreate("swring-fake", unix.MFD_CLOEXEC)
	if err != nil {
		sendError(conn, CtlRegionUnavailable, err.Error())
		return
	}
	defer unix.Close(memfd)
	size := l.MinRegionSize
	if err := unix.Ftruncate(memfd, int64(size)); err != nil {
		sendError(conn, CtlRegionUnavailable, err.Error())
		return
	}
	mem, err := unix.Mmap(memfd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		sendError(conn, CtlRegionUnavailable, err.Error())
		return
	}
	defer unix.Munmap(mem)
	reg := NewRegion(mem)
	WriteHeader(reg, l, size, uint32(os.Getpid()), id, uint64(time.Now().UnixNano()), e.leaseMs)
	atomic.StoreUint32(reg.U32(l.SQCtlOffset+CtlFlags), NeedWakeup)
	if e.corruptHeader != nil {
		e.corruptHeader(reg)
	}
	// SYNC POINT: Ready last (release).
	atomic.StoreUint32(reg.U32(OffState), uint32(StateReady))

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
		sq:   Consumer{Ring: NewRing("sq", reg, l.SQCtlOffset, l.SQArrayOffset, l.SQEntries, SQEWords)},
		cq:   Producer{Ring: NewRing("cq", reg, l.CQCtlOffset, l.CQArrayOffset, l.CQEntries, CQEWords)},
		done: make(chan struct{}),
	}
	welcome := (&Message{Kind: KindWelcome, SessionID: id, Worker: 0, RegionSize: size}).Encode(nil)
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
	if reason != CloseNone {
		atomic.StoreUint32(reg.U32(OffCloseReason), uint32(reason))
		atomic.StoreUint32(reg.U32(OffState), uint32(StateClosed))
		s.signalClient()
		if reason == CloseClientClosed {
			conn.Write((&Message{Kind: KindClosed}).Encode(nil))
		}
	}
	conn.Close()
	<-s.done
}

func (s *fakeSession) readControl() {
	defer close(s.done)
	buf := make([]byte, MaxMessage)
	for {
		n, err := s.conn.Read(buf)
		if err != nil || n == 0 {
			s.stop.CompareAndSwap(0, 3)
			s.kick()
			return
		}
		m, err := DecodeMessage(buf[:n])
		if err != nil {
			continue
		}
		switch m.Kind {
		case KindPing:
			s.conn.Write((&Message{Kind: KindPong}).Encode(nil))
		case KindClose:
			s.stop.CompareAndSwap(0, 1)
			s.kick()
		case KindConnectPeer:
			if s.e.peerGate != nil {
				<-s.e.peerGate
			}
			a, err := netip.ParseAddrPort(m.Addr)
			if err != nil {
				// Like the real engine: refuse the address, keep the session.
				sendError(s.conn, CtlBadRequest, "peer address "+strconv.Quote(m.Addr)+" is not ip:port")
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
			s.conn.Write((&Message{Kind: KindPeerConnected, Peer: h}).Encode(nil))
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
		if e.Opcode == OpReadNeedle {
			needles++
		}
		res := int32(0)
		if failAll {
			res = int32(ErrShuttingDown)
		} else {
			if s.e.opDelay > 0 {
				time.Sleep(s.e.opDelay)
			}
			res = s.execute(&e)
		}
		s.cq.PushCQE(CQE{UserData: e.UserData, Result: res})
	}
	for m := s.e.maxNeedlePass.Load(); needles > m && !s.e.maxNeedlePass.CompareAndSwap(m, needles); m = s.e.maxNeedlePass.Load() {
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

func (s *fakeSession) execute(e *SQE) int32 {
	switch e.Opcode {
	case OpNop:
		if e.Flags != 0 || e.Reserved != 0 || e.Peer != 0 || e.BufOffset != 0 || e.BufLen != 0 || e.Aux != 0 || e.Args != [4]uint64{} {
			atomic.AddUint32(s.sq.Ctl.Invalid, 1)
			return int32(ErrInvalidEntry)
		}
		return 0
	case OpFill:
		if e.Flags != 0 || e.Reserved != 0 || e.Peer != 0 || e.Args != [4]uint64{} {
			atomic.AddUint32(s.sq.Ctl.Invalid, 1)
			return int32(ErrInvalidEntry)
		}
		end := e.BufOffset + uint64(e.BufLen)
		if end < e.BufOffset || end > s.l.BufSize {
			atomic.AddUint32(s.sq.Ctl.Invalid, 1)
			return int32(ErrOutOfBounds)
		}
		b := s.reg.Bytes(s.l.BufOffset+e.BufOffset, uint64(e.BufLen))
		for i := range b {
			b[i] = byte(e.Aux)
		}
		return int32(e.BufLen)
	case OpSend:
		// Validation in the order of engine/src/ops.rs, then the data plane's checks; every
		// peer answers the echo service in place (no UCX here).
		if e.Flags != 0 || e.Reserved != 0 || e.Args[2] != 0 || e.Args[3] != 0 || e.Args[1] > 1<<31-1 {
			atomic.AddUint32(s.sq.Ctl.Invalid, 1)
			return int32(ErrInvalidEntry)
		}
		if e.Peer == 0 {
			return int32(ErrNoSuchPeer)
		}
		end, rend := e.BufOffset+uint64(e.BufLen), e.Args[0]+e.Args[1]
		if end < e.BufOffset || end > s.l.BufSize || rend < e.Args[0] || rend > s.l.BufSize {
			atomic.AddUint32(s.sq.Ctl.Invalid, 1)
			return int32(ErrOutOfBounds)
		}
		s.e.mu.Lock()
		known := e.Peer <= uint32(len(s.e.peers))
		s.e.mu.Unlock()
		switch {
		case !known:
			return int32(ErrNoSuchPeer)
		case e.Aux != ServiceEcho:
			return int32(ErrUnknownService)
		case uint64(e.BufLen) > e.Args[1]:
			return int32(ErrResponseTooLarge)
		}
		if s.e.sendGate != nil {
			<-s.e.sendGate
		}
		copy(s.reg.Bytes(s.l.BufOffset+e.Args[0], uint64(e.BufLen)), s.reg.Bytes(s.l.BufOffset+e.BufOffset, uint64(e.BufLen)))
		return int32(e.BufLen)
	case OpReadNeedle:
		return s.readNeedle(e)
	}
	atomic.AddUint32(s.sq.Ctl.Invalid, 1)
	return int32(ErrUnknownOpcode)
}

// readNeedle validates a READ_NEEDLE in the order of ring-proto validate.rs, then serves it
// from the engine's needle store like the engine's needle path: metadata at the buffer's
// start, data at NeedleMetaLen, result = data bytes.
func (s *fakeSession) readNeedle(e *SQE) int32 {
	ranged := e.Flags&FlagReadNeedleRange != 0
	if e.Flags&^FlagReadNeedleRange != 0 || e.Reserved != 0 || e.Args[1] > math.MaxUint32 ||
		(!ranged && (e.Args[2] != 0 || e.Args[3] != 0)) || e.BufLen > math.MaxInt32 || e.BufLen < NeedleMetaLen {
		atomic.AddUint32(s.sq.Ctl.Invalid, 1)
		return int32(ErrInvalidEntry)
	}
	if e.Peer == 0 {
		return int32(ErrNoSuchPeer)
	}
	end := e.BufOffset + uint64(e.BufLen)
	dataCap := uint64(e.BufLen) - NeedleMetaLen
	if end < e.BufOffset || end > s.l.BufSize || (ranged && e.Args[3] > dataCap) {
		atomic.AddUint32(s.sq.Ctl.Invalid, 1)
		return int32(ErrOutOfBounds)
	}
	s.e.needleReads.Add(1)
	s.e.mu.Lock()
	var addr netip.AddrPort
	known := e.Peer <= uint32(len(s.e.peerList))
	if known {
		addr = s.e.peerList[e.Peer-1]
	}
	hook := s.e.needleHook
	s.e.mu.Unlock()
	if !known {
		return int32(ErrNoSuchPeer)
	}
	fid := FileID{VolumeID: e.Aux, NeedleID: e.Args[0], Cookie: uint32(e.Args[1])}
	if hook != nil {
		if r := hook(addr, fid, e); r != 0 {
			return r
		}
	}
	n, res := s.e.needles.lookup(fid)
	if res != 0 {
		return res
	}
	size := uint64(len(n.data))
	off, want := uint64(0), dataCap
	if ranged {
		off, want = e.Args[2], e.Args[3]
		if off > size || (s.e.strictRange && off >= size) {
			return int32(ErrRangeNotSatisfiable)
		}
	} else if size > dataCap {
		return int32(ErrResponseTooLarge)
	}
	k := min(want, size-off)
	m := n.meta
	m.DataSize, m.RangeOffset = size, off
	buf := s.reg.Bytes(s.l.BufOffset+e.BufOffset, uint64(e.BufLen))
	appendNeedleMeta(buf[:0:NeedleMetaLen], &m)
	copy(buf[NeedleMetaLen:], n.data[off:off+k])
	return int32(k)
}

func (e *fakeEngine) setNeedleHook(h func(peer netip.AddrPort, fid FileID, e *SQE) int32) {
	e.mu.Lock()
	e.needleHook = h
	e.mu.Unlock()
}

// work polls the session until it stops, and returns the close reason to publish.
func (s *fakeSession) work() CloseReason {
	idleSince := time.Now()
	for {
		switch s.stop.Load() {
		case 1: // client Close: complete everything accepted, and what is in the SQ
			for s.pass(false) > 0 {
			}
			return CloseClientClosed
		case 2: // engine shutdown
			atomic.StoreUint32(s.reg.U32(OffState), uint32(StateDraining))
			s.signalClient()
			deadline := time.Now().Add(2 * time.Second)
			for {
				n := s.pass(true)
				if n < 0 || (n == 0 && s.sqEmpty()) || time.Now().After(deadline) {
					break
				}
			}
			return CloseEngineShutdown
		case 3:
			return CloseNone
		}
		n := s.pass(false)
		if n < 0 {
			atomic.StoreUint32(s.reg.U32(OffCloseReason), uint32(CloseBadSqTail))
			atomic.StoreUint32(s.reg.U32(OffState), uint32(StateBroken))
			s.signalClient()
			return CloseNone
		}
		if n > 0 {
			idleSince = time.Now()
			continue
		}
		if time.Since(idleSince) < s.e.spin {
			continue
		}
		// Sleep: NEED_WAKEUP on the SQ, recheck "entries ready and CQ room" (like the Rust
		// engine, this worker also sleeps on a full CQ), block on the SQ doorbell.
		atomic.StoreUint32(s.sq.Ctl.Flags, NeedWakeup)
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

// WriteHeader fills a zeroed header for l and leaves state at Init (engine side).
func WriteHeader(r Region, l Layout, regionSize uint64, pid, session uint32, epoch uint64, leaseMs uint32) {
	*r.U64(OffMagic) = RegionMagic
	*r.U32(OffVersion) = LayoutVersion
	*r.U32(OffHeaderSize) = HeaderSize
	*r.U64(OffRegionSize) = regionSize
	*r.U32(OffSqCtlOffset) = uint32(l.SQCtlOffset)
	*r.U32(OffSqEntries) = l.SQEntries
	*r.U32(OffSqArrayOffset) = uint32(l.SQArrayOffset)
	*r.U32(OffCqCtlOffset) = uint32(l.CQCtlOffset)
	*r.U32(OffCqEntries) = l.CQEntries
	*r.U32(OffCqArrayOffset) = uint32(l.CQArrayOffset)
	*r.U64(OffBufOffset) = l.BufOffset
	*r.U64(OffBufSize) = l.BufSize
	*r.U32(OffEnginePid) = pid
	*r.U32(OffSessionID) = session
	*r.U64(OffEngineEpoch) = epoch
	*r.U32(OffLeaseMs) = leaseMs
	*(*uint16)(unsafe.Add(r.Base, OffSqeSize)) = SQESize
	*(*uint16)(unsafe.Add(r.Base, OffCqeSize)) = CQESize
}

// TestMain lets the test binary act as a fake engine process (for SIGKILL and restart
// tests): SWRING_FAKE_ENGINE=<socket path>.
func TestMain(m *testing.M) {
	if path := os.Getenv("SWRING_FAKE_ENGINE"); path != "" {
		e := newFakeEngine(path)
		if d, err := time.ParseDuration(os.Getenv("SWRING_FAKE_DELAY")); err == nil {
			e.opDelay = d
		}
		if err := e.start(); err != nil {
			os.Stderr.WriteString("fake engine: " + err.Error() + "\n")
			os.Exit(2)
		}
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		e.shutdown()
		os.Exit(0)
	}
	code := m.Run()
	if ExampleSocketPath != "" {
		os.RemoveAll(filepath.Dir(ExampleSocketPath))
	}
	os.Exit(code)
}
