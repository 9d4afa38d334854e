package ring

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/seaweed-ring/seaweed-ring/go-client/internal/wire"
	"golang.org/x/sys/unix"
)

// Request describes one operation. The Client fills in the SQE user_data itself.
type Request struct {
	Opcode Opcode
	Flags  uint8
	Peer   uint32
	// Buf, when valid, is the buffer the operation reads or writes: BufOffset is then
	// relative to Buf (and BufOffset+BufLen must fit in Buf.Len()), and Buf stays reserved
	// until the completion has been reaped, even if the caller stops waiting. Without
	// Buf, BufOffset is relative to the buffer area and nothing is reserved.
	Buf       Buffer
	BufOffset uint64
	BufLen    uint32
	Aux       uint32
	Args      [4]uint64
	// Resp, when valid, is the buffer a SEND writes its response into (or an EXPORT its
	// ticket): Args[0] (the response offset) is then relative to Resp, Args[0]+Args[1]
	// (offset + capacity; ExportTicketLen for EXPORT) must fit in Resp.Len(), and Resp stays
	// reserved like Buf. Without Resp, Args go to the engine as they are.
	Resp Buffer
}

// Ticket identifies a submitted request; Wait for it exactly once.
type Ticket struct {
	c    *Client
	idx  uint32 // the request's slot
	gen  uint32 // the slot's generation (user_data's high half)
	lead uint32 // the slot holding the request's batch record
	bgen uint32 // the record's generation
	bit  uint32 // the request's bit in the record
	full uint32 // the bits of all the record's requests
}

// UserData is the SQE user_data the request was submitted with.
func (t Ticket) UserData() uint64 { return uint64(t.gen)<<32 | uint64(t.idx) }

// Batches. The requests of one publication (up to maxBatch of them, a single Submit being a
// batch of one) share one batch record, kept in the slot of the first of them (the lead
// slot). Their completion, collection and freeing go through the record's words, so that a
// batch costs a few locked instructions, not a few per request:
//
//   - done (gen<<32 | a bit per completed request) is written only by the completer (under
//     cqMu): one store per batch and reap pass publishes the outcomes of every request of
//     the batch it reaped. Waiters load it.
//   - gone (gen<<32 | a bit per request collected by its Wait or abandoned by it) is changed
//     by CAS only: a Wait sets its request's bit with one CAS, the generation in the same
//     word makes a stale ticket's CAS fail. The CAS that leaves every bit of gone and of done
//     set also frees the batch: it moves gone to the next generation with no bits, and its
//     maker pushes all the batch's slots onto the free stack at once.
//   - parked (a bit per request whose waiter sleeps on its slot's wake channel) is set and
//     cleared by the waiters; the completer reads it after its store of done.
//
// The completer learns which slots were submitted from the submission log (Client.log),
// not from the slots: the submitter writes a slot's fields and its log entry with plain
// stores and publishes them with its store of nSubmitted, which the completer loads before
// it looks at a slot. A completion naming a slot the log did not hand over is stray.
const maxBatch = 32

// slot tracks one request from submission to collection. Go memory only: nothing here is
// ever stored into the shared region.
//
// Who writes what: the submitter (holding sqMu, the slot being off the free stack) writes
// gen, lead, bit, pins, buf, resp, next and, in a lead slot, bgen, full and last, before its
// store of Client.nSubmitted publishes them to the completer (and before it hands out the
// tickets); the completer (holding cqMu) owns live and cgen, and writes result and err
// before its store of the record's done publishes them to the waiters. Whoever frees a
// batch writes its last slot's next before the CAS of Client.freeHead publishes it.
type slot struct {
	// The batch record, while this slot leads a batch (see "Batches").
	gone   atomic.Uint64
	done   atomic.Uint64
	parked atomic.Uint32
	bgen   uint32 // the record's generation: gone's, while the batch is in flight
	full   uint32 // the bits of its requests
	last   uint32 // its last request's slot; the chain lead → next → ... ends there

	// The request.
	gen    uint32 // user_data generation, one more on every use of the slot
	lead   uint32 // the slot holding its batch record
	bit    uint32 // its bit in the record
	cgen   uint32 // the completer's copy of gen, taken from the submission log
	result int32
	next   uint32 // index+1 of the next slot: of its batch while in flight, then of the free stack (0: none)
	pins   uint8  // pinBuf | pinResp: the buffers it holds until its completion
	live   bool   // the completer's: submitted (by the log) and not completed (under cqMu)
	err    error
	wake   chan struct{} // capacity 1: signalled when a parked waiter's request may have completed
	buf    Buffer        // pinned buffer, released at completion
	resp   Buffer        // pinned response buffer (SEND), released at completion
	_      [8]byte       // 192 bytes, 3 lines: in a page-aligned (large) array neighbours share none
}

const (
	pinBuf  = 1
	pinResp = 2
)

// Stats are counters of one Client.
type Stats struct {
	Submitted uint64 // SQEs published
	Completed uint64 // CQEs reaped; a request's is counted before its Do or Wait returns
	Stray     uint64 // CQEs whose user_data matched no request (engine bug)
	Sleeps    uint64 // times a waiter slept on the CQ doorbell
	Wakeups   uint64 // times the client signalled the SQ doorbell
	// SQInvalid is the engine's count of rejected entries (SQ invalid counter).
	SQInvalid uint32
	Buffers   BufferStats
}

// Client is one session with the engine. It is safe for concurrent use by many goroutines.
type Client struct {
	path string
	opts []Option
	cfg  config

	conn      *net.UnixConn
	mem       []byte
	reg       wire.Region
	layout    wire.Layout
	sessionID uint32
	worker    uint32
	leaseMs   uint32

	workerFD int
	sessFD   int
	epFile   *os.File
	epRaw    syscall.RawConn
	epollFn  func(fd uintptr) bool
	epEvents [4]unix.EpollEvent
	efdBuf   [64]byte

	sqMu sync.Mutex // held while submitting: guards sq, free
	sq   wire.Producer
	cqMu sync.Mutex // held by the goroutine reaping the CQ (the "leader"): guards cq, settled, unmapped
	cq   wire.Consumer

	slots []slot
	// log[i % len(log)] is the slot of the i-th published request, written under sqMu before
	// the store of nSubmitted that publishes it; the completer reads the entries up to the
	// nSubmitted it loaded (logged counts those it took, under cqMu). An entry is rewritten
	// only len(slots) requests later, when its request has long been completed: a slot is
	// freed only after its completion, and the completer takes the entries in order.
	log    []uint32
	logged uint64
	// Free slots: free is the submitters' private stack (index+1 of its top slot, 0 when
	// empty, linked through slot.next; under sqMu); freeHead is a lock-free
	// stack (index+1 of its top slot, 0 when empty, linked through slot.next) that the freers
	// of batches push a batch's chain of slots onto with one CAS, and that a submitter with an
	// empty free takes whole with one Swap. Only sqMu holders take from it, and they take
	// everything, so a slot can never be popped between a pusher's load and its CAS (no ABA).
	free        uint32
	freeHead    atomic.Uint32
	slotWaiters atomic.Int32  // submitters waiting for a free slot (see waitSlot)
	slotFreed   chan struct{} // capacity 1: a slot may have been freed, for slotWaiters
	// settled counts published requests whose outcome the client holds (CQE reaped, or
	// failed by failAllLocked), so nSubmitted - settled are owed completions. Under cqMu.
	settled uint64
	// unmapped: Close has begun unmapping the region; leaders must not touch it. Under cqMu.
	unmapped bool
	reapTok  chan struct{} // capacity 1: asks the background reaper to lead

	bufs *bufferPool

	// life is read-held by the cold paths that touch the region (Stats, heartbeat, the
	// watcher); Close write-locks it before unmapping. The hot paths do not take it (two
	// atomic RMWs each): submitters touch the region only under sqMu once usable() said the
	// session is up, leaders only under cqMu while unmapped is false, and Close takes both
	// locks after the session went down (see close).
	life     sync.RWMutex
	down     atomic.Bool
	downOnce sync.Once
	downErr  error
	downCh   chan struct{}
	draining atomic.Bool
	closing  atomic.Bool

	closeOnce   sync.Once
	closeErr    error
	closedMsg   chan struct{} // engine sent Closed
	closedOnce  sync.Once
	pong        chan struct{}
	pingMu      sync.Mutex
	peerMu      sync.Mutex     // serializes ConnectPeer
	peerSeqMu   sync.Mutex     // guards peerSent, peerRecv
	peerSent    uint64         // ConnectPeer packets sent
	peerRecv    uint64         // their replies received (PeerConnected or Error)
	peerReply   chan peerReply // capacity 1: the newest reply, for the ConnectPeer caller
	watcherDone chan struct{}
	hbDone      chan struct{}
	reaperDone  chan struct{}

	// nSubmitted is written under sqMu before each publish and read by leaders (owed
	// completions) and Stats; nCompleted is written under cqMu. The others are rare events.
	nSubmitted, nCompleted, nStray, nSleeps, nWakeups atomic.Uint64
}

// SessionID is the engine's id of this session.
func (c *Client) SessionID() uint32 { return c.sessionID }

// Worker is the engine worker serving this session.
func (c *Client) Worker() uint32 { return c.worker }

// Layout is the region layout of this session.
func (c *Client) Layout() Layout { return c.layout }

// MaxInFlight is how many request slots the client has: how many requests may be
// outstanding (submitted and not yet waited for, with a batch's slots coming back
// together); see WithMaxInFlight.
func (c *Client) MaxInFlight() int { return len(c.slots) }

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	s := Stats{
		Submitted: c.nSubmitted.Load(),
		Completed: c.nCompleted.Load(),
		Stray:     c.nStray.Load(),
		Sleeps:    c.nSleeps.Load(),
		Wakeups:   c.nWakeups.Load(),
		Buffers:   c.bufs.stats(),
	}
	c.life.RLock()
	if !c.down.Load() {
		s.SQInvalid = atomic.LoadUint32(c.sq.Ctl.Invalid)
	}
	c.life.RUnlock()
	return s
}

// AllocBuffer reserves size bytes of the shared buffer area, waiting (bounded by ctx) for
// space if needed. Errors: ErrBufferTooLarge, ErrClosed, ctx.Err().
func (c *Client) AllocBuffer(ctx context.Context, size int) (Buffer, error) {
	return c.bufs.alloc(ctx, size)
}

// TryAllocBuffer is AllocBuffer without waiting: ErrNoBufferSpace when no run is free.
func (c *Client) TryAllocBuffer(size int) (Buffer, error) { return c.bufs.tryAlloc(size) }

// Do submits one request and waits for its completion. It returns the non-negative result,
// or an error: a ResultError for a negative result, ErrEngineUnavailable, ErrClosed, or
// ctx.Err() (the request may still execute; its completion is reaped and discarded, and its
// buffer stays reserved until then).
func (c *Client) Do(ctx context.Context, r *Request) (int32, error) {
	t, err := c.Submit(ctx, r)
	if err != nil {
		return 0, err
	}
	return t.Wait(ctx)
}

// Nop runs one NOP round trip.
func (c *Client) Nop(ctx context.Context) error {
	_, err := c.Do(ctx, &Request{Opcode: OpNop})
	return err
}

// Fill asks the engine to write n bytes of value v into buf at off; it returns the number
// of bytes written.
func (c *Client) Fill(ctx context.Context, buf Buffer, off, n int, v byte) (int, error) {
	if off < 0 || n < 0 || uint64(n) > 1<<32-1 {
		return 0, fmt.Errorf("swring: fill range %d+%d invalid", off, n)
	}
	res, err := c.Do(ctx, &Request{Opcode: OpFill, Buf: buf, BufOffset: uint64(off), BufLen: uint32(n), Aux: uint32(v)})
	return int(res), err
}
