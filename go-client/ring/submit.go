package ring

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"time"
	"unsafe"

	"github.com/seaweed-ring/seaweed-ring/go-client/internal/wire"
	"golang.org/x/sys/unix"
)

// usable reports why no new request may be submitted, or nil. Called under sqMu.
func (c *Client) usable() error {
	if c.down.Load() {
		return c.downErr
	}
	if c.closing.Load() {
		return ErrClosed
	}
	// SYNC POINT: acquire load of state (pairs with the engine's release store).
	if st := c.reg.State(); st != wire.StateReady {
		if st == wire.StateDraining {
			c.draining.Store(true)
		}
		return &sessionError{sentinel: ErrEngineUnavailable, detail: "session is " + st.String()}
	}
	return nil
}

// Submit publishes one request and returns at once; Wait on the ticket for the result.
// It blocks (bounded by ctx) only when the SQ is full or MaxInFlight requests are
// outstanding.
func (c *Client) Submit(ctx context.Context, r *Request) (Ticket, error) {
	var t [1]Ticket
	_, err := c.submit(ctx, oneRequest(r), t[:])
	return t[0], err
}

// SubmitBatch publishes reqs with as few ring publications and worker wakeups as the SQ
// space allows, storing one ticket per request in tickets (len(tickets) >= len(reqs)). It
// returns how many were submitted; on error the first n tickets are still valid and must be
// waited for. The tickets may be waited for in any order and from any goroutines; the
// requests of each publication (up to 32) give their slots back together, once all of them
// were waited for (see WithMaxInFlight), and WaitAll collects them together.
func (c *Client) SubmitBatch(ctx context.Context, reqs []Request, tickets []Ticket) (int, error) {
	if len(tickets) < len(reqs) {
		return 0, errors.New("swring: SubmitBatch needs one ticket per request")
	}
	return c.submit(ctx, reqs, tickets)
}

func oneRequest(r *Request) []Request { return unsafe.Slice(r, 1) }

// submitChunk is how many requests submit checks and pins before publishing them.
const submitChunk = 32

func (c *Client) submit(ctx context.Context, reqs []Request, out []Ticket) (int, error) {
	done := 0
	for done < len(reqs) {
		if c.down.Load() {
			return done, c.downErr
		}
		// Check and pin up to submitChunk requests outside sqMu (pin panics on a released
		// Buffer, and must not do so holding a lock); a bad one ends the chunk before it and
		// is reported once the requests ahead of it are in.
		k := 0
		var bad error
		for done+k < len(reqs) && k < submitChunk {
			r := &reqs[done+k]
			if bad = c.checkRequest(r); bad != nil {
				break
			}
			pinRequest(r)
			k++
		}
		if k == 0 {
			return done, bad
		}
		n, err := c.push(ctx, reqs[done:done+k], out[done:done+k])
		for i := n; i < k; i++ {
			unpinRequest(&reqs[done+i])
		}
		done += n
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

func pinRequest(r *Request) {
	if r.Buf.Valid() {
		r.Buf.pin()
	}
	if r.Resp.Valid() {
		r.Resp.pin()
	}
}

func unpinRequest(r *Request) {
	if r.Buf.Valid() {
		r.Buf.unpin()
	}
	if r.Resp.Valid() {
		r.Resp.unpin()
	}
}

// takeSlot pops a free slot off the private stack, refilling it from freeHead when it is
// empty. Caller holds sqMu.
func (c *Client) takeSlot() (uint32, bool) {
	if c.free == 0 {
		// A plain load first: with no slot free (MaxInFlight reached) this stays cheap.
		// Swap pairs with freeBatch's CAS: the slots and their next links pushed before it
		// are visible here. The whole stack becomes ours: the chains of the batches freed
		// last are on top, in their order (their lines are warm).
		if c.freeHead.Load() == 0 {
			return 0, false
		}
		c.free = c.freeHead.Swap(0)
	}
	idx := c.free - 1
	c.free = c.slots[idx].next
	return idx, true
}

// initSlots gives c n slots, all free, and the submission log.
func (c *Client) initSlots(n int) {
	c.slots = make([]slot, n)
	c.log = make([]uint32, n)
	for i := range c.slots {
		c.slots[i].wake = make(chan struct{}, 1)
		// Lowest index on top: the first requests use the first slots.
		if i+1 < n {
			c.slots[i].next = uint32(i) + 2
		}
	}
	c.free = 1
}

// freeBatch pushes the slots of the batch led by lead, which nobody holds any more, onto
// freeHead with one CAS, and wakes a submitter waiting for a slot. The caller made the CAS
// of the record's gone that freed the batch.
func (c *Client) freeBatch(lead uint32) {
	b := &c.slots[lead]
	last := &c.slots[b.last]
	for {
		h := c.freeHead.Load()
		last.next = h
		// Pairs with takeSlot's Swap (publishes the chain's links and everything the
		// batch's last holders wrote).
		if c.freeHead.CompareAndSwap(h, lead+1) {
			break
		}
	}
	// The CAS above comes before this load in the SC order of Go atomics; a waiter's
	// increment of slotWaiters comes before its own load of freeHead (push): either it
	// sees these slots or we see it waiting (store-buffering pattern).
	if c.slotWaiters.Load() != 0 {
		c.signalSlotWaiter()
	}
}

// signalSlotWaiter wakes one submitter waiting for a free slot (it rechecks; a wake-up
// with nothing free only makes it wait again).
func (c *Client) signalSlotWaiter() {
	select {
	case c.slotFreed <- struct{}{}:
	default:
	}
}

// testHookSlotWait, when set (tests), runs between a submitter's finding no free slot and
// its wait for one.
var testHookSlotWait func()

// waitSlot blocks until a slot may have been freed. Caller announced itself in
// slotWaiters and saw no free slot since. Abandoned requests free their slots when their
// completions are reaped, so make sure someone reaps.
func (c *Client) waitSlot(ctx context.Context) error {
	c.kickReaper()
	select {
	case <-c.slotFreed:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.downCh:
		return c.downErr
	}
}

// checkRequest checks the buffers a request names: ranges inside them, and buffers of this
// session.
func (c *Client) checkRequest(r *Request) error {
	if r.Buf.Valid() {
		if r.Buf.p != c.bufs {
			return errForeignBuffer
		}
		if r.BufOffset > uint64(r.Buf.Len()) || uint64(r.BufLen) > uint64(r.Buf.Len())-r.BufOffset {
			return fmt.Errorf("%w: request range %d+%d outside its %d-byte buffer", ErrOutOfBounds, r.BufOffset, r.BufLen, r.Buf.Len())
		}
	}
	if r.Resp.Valid() {
		if r.Resp.p != c.bufs {
			return errForeignBuffer
		}
		// EXPORT's Args[1] must be 0; the engine writes ExportTicketLen bytes at Args[0].
		respLen := r.Args[1]
		if r.Opcode == OpExport {
			respLen = ExportTicketLen
		}
		if r.Args[0] > uint64(r.Resp.Len()) || respLen > uint64(r.Resp.Len())-r.Args[0] {
			return fmt.Errorf("%w: response range %d+%d outside its %d-byte buffer", ErrOutOfBounds, r.Args[0], respLen, r.Resp.Len())
		}
	}
	return nil
}

var errForeignBuffer = errors.New("swring: the request's Buffer belongs to another session")

// push publishes reqs (buffers pinned by the caller), storing their tickets in out: in
// one or more publications, waiting for SQ space and for free slots (backpressure) as
// needed. It returns how many it published.
func (c *Client) push(ctx context.Context, reqs []Request, out []Ticket) (int, error) {
	pushed := 0
	var idxs [maxBatch]uint32
	for pushed < len(reqs) {
		c.sqMu.Lock()
		if err := c.usable(); err != nil {
			c.sqMu.Unlock()
			return pushed, err
		}
		free, err := c.sq.Free()
		if err != nil {
			c.sqMu.Unlock()
			c.fail(&sessionError{sentinel: ErrEngineUnavailable, detail: "SQ head corrupt", cause: err})
			c.failAll()
			return pushed, c.downErr
		}
		want := min(int(free), len(reqs)-pushed, maxBatch)
		n := 0
		for ; n < want; n++ {
			idx, ok := c.takeSlot()
			if !ok {
				break
			}
			idxs[n] = idx
		}
		if n == 0 && want == 0 {
			c.sqMu.Unlock()
			if err := c.waitSQSpace(ctx); err != nil {
				return pushed, err
			}
			continue
		}
		if n == 0 {
			// Every slot is taken (MaxInFlight). Announce, then look once more: pairs with
			// freeBatch's CAS → load of slotWaiters (either it sees us or we see its slots).
			c.slotWaiters.Add(1)
			none := c.freeHead.Load() == 0
			c.sqMu.Unlock()
			var err error
			if none {
				if testHookSlotWait != nil {
					testHookSlotWait()
				}
				err = c.waitSlot(ctx)
			}
			// (An RMW: waiters come and go concurrently; nothing is published by it.)
			if c.slotWaiters.Add(-1) != 0 && err != nil {
				// We may have taken the wake-up meant for another waiter: pass it on.
				c.signalSlotWaiter()
			}
			if err != nil {
				return pushed, err
			}
			continue
		}
		c.publishBatch(reqs[pushed:pushed+n], idxs[:n], out[pushed:pushed+n])
		// Slots left for waiters: we (or a waiter before us) may have taken several at once
		// into the private stack, or the wake-up for them. A waiter announces itself under
		// sqMu, so this load sees every waiter that has not looked at the stacks since.
		if c.slotWaiters.Load() != 0 && (c.free != 0 || c.freeHead.Load() != 0) {
			c.signalSlotWaiter()
		}
		c.sqMu.Unlock()
		pushed += n
	}
	return pushed, nil
}

// publishBatch makes one batch of reqs in the slots idxs (taken off the free stack, len(reqs)
// of them, at most maxBatch), pushes their SQEs, publishes them and stores their tickets in
// out. Caller holds sqMu, saw the session usable and the SQ room for them.
func (c *Client) publishBatch(reqs []Request, idxs []uint32, out []Ticket) {
	n := len(idxs)
	lead := idxs[0]
	b := &c.slots[lead]
	// The record's generation: the freer's CAS left gone at (gen, no bits), and our Swap of
	// freeHead (takeSlot) came after that CAS's push of the slots. The record's words are
	// not written until the batch is published: done may hold an older generation, which
	// means "nothing completed".
	bgen := uint32(b.gone.Load() >> 32)
	full := uint32(1)<<n - 1 // n <= 32: a shift by 32 gives 0, and 0 - 1 all bits
	b.bgen, b.full, b.last = bgen, full, idxs[n-1]
	base := c.nSubmitted.Load() // written only under sqMu, which we hold
	for i, idx := range idxs {
		r := &reqs[i]
		s := &c.slots[idx]
		s.gen++
		s.lead, s.bit = lead, 1<<i
		if i+1 < n {
			s.next = idxs[i+1] + 1
		}
		// Plain writes: published to the completer by the store of nSubmitted below, to
		// the waiters by the tickets.
		bufOff, respOff := r.BufOffset, r.Args[0]
		s.pins = 0
		if r.Buf.Valid() {
			s.buf = r.Buf
			s.pins |= pinBuf
			bufOff += r.Buf.Offset()
		}
		if r.Resp.Valid() {
			s.resp = r.Resp
			s.pins |= pinResp
			respOff += r.Resp.Offset()
		}
		c.log[(base+uint64(i))%uint64(len(c.log))] = idx
		// The SQE's words (entry.rs Sqe::to_words), in registers.
		c.sq.PushSQEWords(uint64(r.Opcode)|uint64(r.Flags)<<8|uint64(r.Peer)<<32, uint64(s.gen)<<32|uint64(idx),
			bufOff, uint64(r.BufLen)|uint64(r.Aux)<<32, respOff, r.Args[1], r.Args[2], r.Args[3])
		// Field by field, for the same reason.
		t := &out[i]
		t.c, t.idx, t.gen, t.lead, t.bgen, t.bit, t.full = c, idx, s.gen, lead, bgen, 1<<i, full
	}
	// Count before publishing, so a completion is never reaped before it is counted; the
	// store publishes the slots and log entries written above (pairs with consumeLog's
	// load). Written only under sqMu; the leaders read it (owed completions).
	c.nSubmitted.Store(base + uint64(n))
	if c.sq.Publish() {
		// Under sqMu: Close closes workerFD only after taking sqMu once the session
		// is down, and usable() saw it up.
		c.wakeWorker()
	}
}

// wakeWorker rings the session's SQ doorbell, one byte into the pipe's write end (SPEC.md
// §6): the worker advertised NEED_WAKEUP on the SQ. EAGAIN (a full pipe) means a wake-up is
// already pending.
func (c *Client) wakeWorker() {
	c.nWakeups.Add(1)
	for {
		_, err := unix.Write(c.workerFD, wakeValue[:])
		if err != unix.EINTR {
			return
		}
	}
}

// waitSQSpace waits for the engine to consume SQ entries. The engine only admits an SQE
// when it can reserve a CQ slot, so keep the CQ reaped meanwhile.
func (c *Client) waitSQSpace(ctx context.Context) error {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for i := 0; ; i++ {
		c.kickReaper()
		if i < 50 {
			runtime.Gosched()
		} else {
			d := time.Duration(min(i-49, 100)) * 10 * time.Microsecond
			if timer == nil {
				timer = time.NewTimer(d)
			} else {
				timer.Reset(d)
			}
			select {
			case <-timer.C:
			case <-ctx.Done():
			case <-c.downCh:
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		c.sqMu.Lock()
		err := c.usable()
		var free uint32
		if err == nil {
			free, err = c.sq.Refresh()
			if err != nil {
				c.sqMu.Unlock()
				c.fail(&sessionError{sentinel: ErrEngineUnavailable, detail: "SQ head corrupt", cause: err})
				c.failAll()
				return c.downErr
			}
		}
		c.sqMu.Unlock()
		if err != nil {
			return err
		}
		if free > 0 {
			return nil
		}
	}
}
