package ring

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
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
// waited for.
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

// takeSlot pops a free slot, refilling the private stack from freeHead when it is empty.
// Caller holds sqMu.
func (c *Client) takeSlot() (uint32, bool) {
	if len(c.free) == 0 {
		// A plain load first: with no slot free (MaxInFlight reached) this stays cheap.
		// Swap pairs with freeSlot's CAS: the slots and their next links pushed before it
		// are visible here.
		if c.freeHead.Load() == 0 {
			return 0, false
		}
		h := c.freeHead.Swap(0)
		for h != 0 {
			c.free = append(c.free, h-1)
			h = c.slots[h-1].next
		}
		// The chain runs newest first; pop the newest first (its lines are warm).
		slices.Reverse(c.free)
	}
	idx := c.free[len(c.free)-1]
	c.free = c.free[:len(c.free)-1]
	return idx, true
}

// freeSlot pushes a slot that nobody holds any more onto freeHead and wakes a submitter
// waiting for one.
func (c *Client) freeSlot(idx uint32) {
	s := &c.slots[idx]
	for {
		h := c.freeHead.Load()
		s.next = h
		// Pairs with takeSlot's Swap (publishes s.next and everything the slot's last
		// holder wrote).
		if c.freeHead.CompareAndSwap(h, idx+1) {
			break
		}
	}
	// The CAS above comes before this load in the SC order of Go atomics; a waiter's
	// increment of slotWaiters comes before its own load of freeHead (push): either it
	// sees this slot or we see it waiting (store-buffering pattern).
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

// prepare readies a free slot for r, whose buffers the caller pinned, and returns its new
// generation. Caller holds sqMu (and took idx off the free stack).
func (c *Client) prepare(idx uint32, r *Request) uint32 {
	s := &c.slots[idx]
	gen := slotGen(s.word.Load()) + 1
	s.result, s.flags, s.err = 0, 0, nil
	s.buf, s.resp = r.Buf, r.Resp
	// Publishes the fields above to the completer and the waiter (they load word first).
	s.word.Store(slotWord(gen, slotPending))
	return gen
}

// push publishes reqs (buffers pinned by the caller), storing their tickets in out: in
// one or more publications, waiting for SQ space and for free slots (backpressure) as
// needed. It returns how many it published.
func (c *Client) push(ctx context.Context, reqs []Request, out []Ticket) (int, error) {
	pushed := 0
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
		want := min(int(free), len(reqs)-pushed)
		n := 0
		for ; n < want; n++ {
			idx, ok := c.takeSlot()
			if !ok {
				break
			}
			r := &reqs[pushed+n]
			gen := c.prepare(idx, r)
			e := wire.SQE{
				Opcode:    uint8(r.Opcode),
				Flags:     r.Flags,
				Peer:      r.Peer,
				UserData:  uint64(gen)<<32 | uint64(idx),
				BufOffset: r.BufOffset,
				BufLen:    r.BufLen,
				Aux:       r.Aux,
				Args:      r.Args,
			}
			if r.Buf.Valid() {
				e.BufOffset += r.Buf.Offset()
			}
			if r.Resp.Valid() {
				e.Args[0] += r.Resp.Offset()
			}
			c.sq.PushSQE(&e)
			out[pushed+n] = Ticket{c: c, idx: idx, gen: gen}
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
			// freeSlot's CAS → load of slotWaiters (either it sees us or we see its slot).
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
		// Count before publishing, so a completion is never reaped before it is counted.
		// Written only under sqMu; the leaders read it (owed completions).
		c.nSubmitted.Store(c.nSubmitted.Load() + uint64(n))
		if c.sq.Publish() {
			// Under sqMu: Close closes workerFD only after taking sqMu once the session
			// is down, and usable() above saw it up.
			c.wakeWorker()
		}
		// Slots left for waiters: we (or a waiter before us) may have taken several at once
		// into the private stack, or the wake-up for them. A waiter announces itself under
		// sqMu, so this load sees every waiter that has not looked at the stacks since.
		if c.slotWaiters.Load() != 0 && (len(c.free) > 0 || c.freeHead.Load() != 0) {
			c.signalSlotWaiter()
		}
		c.sqMu.Unlock()
		pushed += n
	}
	return pushed, nil
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
