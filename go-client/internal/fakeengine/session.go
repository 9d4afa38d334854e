package fakeengine

import (
	"math"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/seaweed-ring/seaweed-ring/go-client/internal/wire"
	"golang.org/x/sys/unix"
)

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
	ready := s.sq.Refresh()
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
		r := s.sq.Refresh()
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
	return s.sq.Refresh() == 0
}
