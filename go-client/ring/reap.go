package ring

import (
	"context"
	"errors"
	"fmt"
	mbits "math/bits"
	"os"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/seaweed-ring/seaweed-ring/go-client/internal/wire"
	"golang.org/x/sys/unix"
)

var errWaited = errors.New("swring: ticket already waited for")

// Wait blocks until the request completes and returns its result (see Do for the errors).
// On ctx cancellation it returns ctx.Err() promptly; the late completion is reaped and
// discarded, and a buffer the request used is released only then.
func (t Ticket) Wait(ctx context.Context) (int32, error) {
	c := t.c
	if c == nil || int(t.idx) >= len(c.slots) || int(t.lead) >= len(c.slots) || t.bit == 0 || t.bit&t.full == 0 {
		return 0, errors.New("swring: invalid ticket")
	}
	b := &c.slots[t.lead]
	for {
		// Pairs with setGone's CAS: a generation other than the ticket's means the batch was
		// freed (every ticket of it waited for); the ticket's bit set, that it was.
		g := b.gone.Load()
		if uint32(g>>32) != t.bgen || uint32(g)&t.bit != 0 {
			return 0, errWaited
		}
		// Pairs with the completer's store of done (publishRecord): the request's outcome
		// is visible once this load shows its bit.
		d := b.done.Load()
		if uint32(d>>32) == t.bgen && uint32(d)&t.bit != 0 {
			res, err, ok := c.collect(t, g, d)
			if !ok {
				continue // another request of the batch changed gone meanwhile
			}
			return res, err
		}
		if c.down.Load() {
			// Published by a submitter that saw the session up just before it went down,
			// after failAll had passed the submission log: fail it now, or nobody will.
			c.failAll()
			continue
		}
		if c.cqMu.TryLock() {
			err := c.lead(ctx, waitTarget{b: b, gen: t.bgen, bit: t.bit})
			settled := c.settled
			c.cqMu.Unlock()
			c.handOff(settled)
			// Abandon only if still not completed; else collect it below.
			if err != nil && c.abandon(t) {
				c.kickReaper()
				return 0, err
			}
			continue
		}
		// Park. The Or and the completer's store of done are both in the SC order of Go
		// atomics, and each side loads the other's word after its own: either the load of
		// done below sees the completion, or the completer sees our bit and signals wake.
		b.parked.Or(t.bit)
		d = b.done.Load()
		if uint32(d>>32) == t.bgen && uint32(d)&t.bit != 0 {
			// Completed meanwhile. The completer may still signal wake: a token left there
			// only makes a later sleeper on this slot look once more. (The And orders
			// nothing: a bit the completer still sees costs one such token.)
			b.parked.And(^t.bit)
			continue
		}
		select {
		case <-c.slots[t.idx].wake:
			// Possibly a token of an earlier request of this slot: look again.
			b.parked.And(^t.bit)
		case <-ctx.Done():
			b.parked.And(^t.bit)
			if c.abandon(t) {
				c.kickReaper()
				return 0, ctx.Err()
			}
			// Completed meanwhile: collect it.
		}
	}
}

// WaitAll waits for every ticket and returns the first error (all tickets are waited for
// even after an error, unless ctx ends). Consecutive tickets of one SubmitBatch are
// collected together (one atomic operation for each publication).
func WaitAll(ctx context.Context, tickets []Ticket) error {
	var first error
	for i := 0; i < len(tickets); {
		if n := collectRun(tickets[i:], &first); n > 0 {
			i += n
			continue
		}
		if _, err := tickets[i].Wait(ctx); err != nil && first == nil {
			first = err
		}
		i++
	}
	return first
}

// collectRun collects, with one CAS of their record's gone, the tickets at the start of ts
// that share tickets[0]'s batch record and have completed (at least two), setting *first
// to the first error among them if it is nil. It returns how many it collected (0: none;
// the caller waits for ts[0] alone).
func collectRun(ts []Ticket, first *error) int {
	t := ts[0]
	c := t.c
	if c == nil || int(t.lead) >= len(c.slots) || len(ts) < 2 {
		return 0
	}
	b := &c.slots[t.lead]
	g := b.gone.Load() // pairs with setGone's CAS, as in Wait
	d := b.done.Load() // pairs with publishRecord's store, as in Wait
	if uint32(g>>32) != t.bgen || uint32(d>>32) != t.bgen {
		return 0
	}
	var bits uint32
	n := 0
	for _, u := range ts {
		if u.c != c || u.lead != t.lead || u.bgen != t.bgen || u.full != t.full || u.bit&t.full == 0 ||
			u.bit&bits != 0 || int(u.idx) >= len(c.slots) || uint32(d)&u.bit == 0 || uint32(g)&u.bit != 0 {
			break
		}
		bits |= u.bit
		n++
	}
	if n < 2 {
		return 0
	}
	// Read the outcomes before the CAS: once it succeeds, the batch may be freed and reused.
	var err error
	for _, u := range ts[:n] {
		if err = c.slots[u.idx].outcome(); err != nil {
			break
		}
	}
	if !c.setGone(b, t, g, d, bits) {
		return 0 // gone changed meanwhile: let Wait sort it out
	}
	if err != nil && *first == nil {
		*first = err
	}
	return n
}

// outcome is the error Wait returns for the slot's completed request.
func (s *slot) outcome() error {
	if s.err != nil {
		return s.err
	}
	if s.result < 0 {
		return ResultError(s.result)
	}
	return nil
}

// collect returns the outcome of t's request, which the caller saw completed in d, with
// gone at g, and marks it collected; false if gone changed meanwhile (look again).
func (c *Client) collect(t Ticket, g, d uint64) (int32, error, bool) {
	s := &c.slots[t.idx]
	// Read before the CAS: once it succeeds, the batch may be freed and reused.
	res, err := s.result, s.err
	if !c.setGone(&c.slots[t.lead], t, g, d, t.bit) {
		return 0, nil, false
	}
	if err != nil {
		return 0, err, true
	}
	if res < 0 {
		return res, ResultError(res), true
	}
	return res, nil, true
}

// abandon marks t's request as given up by its waiter, unless it has completed (false:
// collect it instead). Its completion frees the batch if nobody else holds it by then.
func (c *Client) abandon(t Ticket) bool {
	b := &c.slots[t.lead]
	for {
		g := b.gone.Load() // as in Wait
		if uint32(g>>32) != t.bgen || uint32(g)&t.bit != 0 {
			return true // (a second Wait of the ticket raced us: nothing left to give up)
		}
		d := b.done.Load() // as in Wait
		if uint32(d>>32) == t.bgen && uint32(d)&t.bit != 0 {
			return false
		}
		if c.setGone(b, t, g, d, t.bit) {
			return true
		}
	}
}

// setGone sets bits in the gone word of the record b (t's batch), which the caller loaded
// at g (t's generation, none of bits set), having loaded done at d. It frees the batch if
// that leaves every request of it collected or abandoned and completed. False: gone
// changed meanwhile.
func (c *Client) setGone(b *slot, t Ticket, g, d uint64, bits uint32) bool {
	next := g | uint64(bits)
	allDone := uint32(d>>32) == t.bgen && uint32(d) == t.full
	if allDone && uint32(next) == t.full {
		// Collected and completed, all of them: free the batch with the same CAS (the next
		// generation, no bits: stale tickets fail their generation check).
		next = uint64(t.bgen+1) << 32
	}
	// A CAS, not an Or: the generation is checked in the same operation, so a stale
	// ticket (or the second of two Waits of one ticket) cannot mark a reused record.
	// Pairs with the other waiters' CASes and with publishRecord's load of gone.
	if !b.gone.CompareAndSwap(g, next) {
		return false
	}
	switch {
	case uint32(next>>32) != t.bgen:
		c.freeBatch(t.lead)
	case uint32(next) == t.full:
		// All gone, not all done when we looked. The CAS above comes before this load, and
		// the completer's store of done before its load of gone (SC order): at least one of
		// us sees both complete. Both may: the CAS below picks one.
		if b.done.Load() == uint64(t.bgen)<<32|uint64(t.full) && b.gone.CompareAndSwap(next, uint64(t.bgen+1)<<32) {
			c.freeBatch(t.lead)
		}
	}
	return true
}

// completeSlot stores an outcome for the request (idx, gen) and returns its batch record
// and bit, for publishRecord; ok false for a completion of no live request (counted as
// stray: an engine bug, or a hostile engine). Caller holds cqMu and took the submission log
// (consumeLog) after it saw the completion; completers never race each other.
func (c *Client) completeSlot(idx, gen uint32, res int32, err error) (lead, bit uint32, ok bool) {
	if int(idx) >= len(c.slots) {
		c.nStray.Add(1)
		return 0, 0, false
	}
	s := &c.slots[idx]
	if !s.live || s.cgen != gen {
		c.nStray.Add(1)
		return 0, 0, false
	}
	s.live = false
	// The engine is done with the buffers: they may be reused once their owners released
	// them.
	if s.pins != 0 {
		if s.pins&pinBuf != 0 {
			s.buf.unpin()
			s.buf = Buffer{}
		}
		if s.pins&pinResp != 0 {
			s.resp.unpin()
			s.resp = Buffer{}
		}
		s.pins = 0
	}
	s.result, s.err = res, err
	return s.lead, s.bit, true
}

// publishRecord marks the requests bits of the batch led by lead completed (completeSlot
// stored their outcomes; slotOf[i] is the slot of bit i), wakes their parked waiters, and
// frees the batch if every request of it was collected or abandoned. Caller holds cqMu.
func (c *Client) publishRecord(lead, bits uint32, slotOf *[maxBatch]uint32) {
	b := &c.slots[lead]
	gen, full := b.bgen, b.full // the submitter's, from before its nSubmitted store (consumeLog)
	var now uint32
	if d := b.done.Load(); uint32(d>>32) == gen {
		now = uint32(d) // only we store done: no one changes it under us
	}
	now |= bits
	// Publishes the outcomes: pairs with Wait's load of done. An atomic store (not an RMW):
	// the completer is the only writer. From here the batch may be freed by its waiters:
	// nothing of it but its record's words is read below.
	b.done.Store(uint64(gen)<<32 | uint64(now))
	// The store above and the waiters' Or of parked are in the SC order: see Wait.
	if p := b.parked.Load() & bits; p != 0 {
		for ; p != 0; p &= p - 1 {
			select {
			case c.slots[slotOf[mbits.TrailingZeros32(p)]].wake <- struct{}{}:
			default: // a token is there already: the waiter looks again anyway
			}
		}
	}
	if now == full {
		// All completed; free the batch if all were collected or abandoned too (see setGone
		// for the other side of this race).
		all := uint64(gen)<<32 | uint64(full)
		if b.gone.Load() == all && b.gone.CompareAndSwap(all, uint64(gen+1)<<32) {
			c.freeBatch(lead)
		}
	}
}

// consumeLog takes the submission log up to nSubmitted: the slots named there become live
// for the completer. It returns the nSubmitted it loaded. Caller holds cqMu.
func (c *Client) consumeLog() uint64 {
	// Pairs with publishBatch's store: the slots' fields and the log entries written before
	// it are visible.
	n := c.nSubmitted.Load()
	for ; c.logged < n; c.logged++ {
		s := &c.slots[c.log[c.logged%uint64(len(c.log))]]
		s.cgen, s.live = s.gen, true
	}
	return n
}

// waitTarget is the request a leader reaps for: the bit of a batch record, in its
// generation. A zero target (b nil) means "everything owed".
type waitTarget struct {
	b   *slot
	gen uint32
	bit uint32
}

// reapLocked dispatches every ready completion. Caller holds cqMu and unmapped is false.
func (c *Client) reapLocked() error {
	n := c.cq.Refresh()
	if n == 0 {
		return nil
	}
	// After seeing the completions: every request the engine completed was logged before
	// the nSubmitted store that preceded its publication.
	c.consumeLog()
	// Counted before any waiter is released below, so that a caller whose request returned
	// finds it in Stats().Completed (a statistic; nothing is ordered by it).
	c.nCompleted.Add(uint64(n))
	// Completions of one batch come together: one store of its record's done for each run.
	var lead, bits uint32
	var slotOf [maxBatch]uint32
	for i := uint32(0); i < n; i++ {
		e := c.cq.PopCQE()
		idx := uint32(e.UserData)
		l, bit, ok := c.completeSlot(idx, uint32(e.UserData>>32), e.Result, nil)
		if !ok {
			continue
		}
		if bits != 0 && l != lead {
			c.publishRecord(lead, bits, &slotOf)
			bits = 0
		}
		lead, bits = l, bits|bit
		slotOf[mbits.TrailingZeros32(bit)] = idx
	}
	if bits != 0 {
		c.publishRecord(lead, bits, &slotOf)
	}
	// Hand the slots back before the waiters run, so the engine can admit more.
	c.cq.Release()
	// SPEC.md §6 "The engine also sleeps on a full CQ": with more requests in flight than
	// the CQ holds, the worker may sleep on SQ entries it could not admit; our new CQ head
	// gives it room, so look at its NEED_WAKEUP. The SC store (head, in release) → load
	// (flags) order of Go atomics is the full fence that pairs with the worker's
	// announce_sleep (flags store; fence(SeqCst); check "SQ ready and CQ room").
	// settled does not count the n just reaped yet: this is the in-flight count before
	// this reap. (nSubmitted pairs with publishBatch's store, made before the publish whose
	// entries we reaped. Loaded here, after our head store, not with consumeLog: a
	// submitter whose store this load misses loads the worker's flag after our head store,
	// so either the worker saw our room or that submitter sees its flag and wakes it.)
	if int64(c.nSubmitted.Load()-c.settled) > int64(c.layout.CQEntries) && atomic.LoadUint32(c.sq.Ctl.Flags)&wire.NeedWakeup != 0 {
		c.wakeWorker()
	}
	c.settled += uint64(n)
	return nil
}

// owedLocked reports whether a published request's completion is still to be reaped.
// Caller holds cqMu. (Stray CQEs can make settled run ahead of nSubmitted: signed.)
func (c *Client) owedLocked() bool { return int64(c.nSubmitted.Load()-c.settled) > 0 }

func (c *Client) targetDone(target waitTarget) bool {
	if target.b == nil {
		return !c.owedLocked()
	}
	d := target.b.done.Load() // written by us (the leader holds cqMu): no ordering needed
	return uint32(d>>32) == target.gen && uint32(d)&target.bit != 0
}

// lead reaps the CQ until target completed (or, with no target, until nothing is
// outstanding): spin for cfg.spin, then sleep on the CQ doorbell. Caller holds cqMu.
func (c *Client) lead(ctx context.Context, target waitTarget) error {
	// The spin is timed from the first check (after 64 passes), so a completion that comes
	// at once costs no clock read.
	var start time.Time
	for i := 1; ; i++ {
		if c.down.Load() {
			c.failAllLocked()
			return c.downErr
		}
		if err := c.reapLocked(); err != nil {
			c.fail(&sessionError{sentinel: ErrEngineUnavailable, detail: "CQ tail corrupt", cause: err})
			c.failAllLocked()
			return c.downErr
		}
		if c.targetDone(target) {
			return nil
		}
		if i%64 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
			if c.checkStateLocked() {
				return c.downErr
			}
			if start.IsZero() {
				start = time.Now()
			}
			if time.Since(start) >= c.cfg.spin {
				if err := c.sleep(ctx); err != nil {
					return err
				}
				start = time.Now()
			} else if i%1024 == 0 {
				runtime.Gosched()
			}
		}
	}
}

// checkStateLocked applies the terminal rule (SPEC.md §8) when the engine ended the
// session. Caller holds cqMu.
func (c *Client) checkStateLocked() bool {
	// SYNC POINT: acquire load of state; pairs with the engine's release store, which
	// follows its final CQ tail and SQ head stores.
	st := c.reg.State()
	switch {
	case st == wire.StateDraining:
		c.draining.Store(true)
	case st.Terminal():
		reason := wire.CloseReason(atomic.LoadUint32(c.reg.U32(wire.OffCloseReason)))
		sentinel := ErrEngineUnavailable
		if reason == wire.CloseClientClosed && c.closing.Load() {
			sentinel = ErrClosed
		}
		c.fail(&sessionError{sentinel: sentinel, detail: fmt.Sprintf("engine ended the session (state %v, reason %v)", st, reason)})
		c.failAllLocked()
		return true
	}
	return false
}

// sleep does the consumer side of the sleep/wake handshake on the CQ and blocks until the
// CQ doorbell fires, ctx ends, or the client is shut down (kickLeader).
func (c *Client) sleep(ctx context.Context) error {
	if !c.cq.PrepareSleep() {
		return nil // a completion is ready
	}
	defer c.cq.FinishSleep()
	// The engine rings the CQ doorbell on every state change, but check once more now that
	// NEED_WAKEUP is set, to not sleep through a change that happened just before.
	if c.checkStateLocked() {
		return c.downErr
	}
	// Reset an earlier kick, then re-check the conditions a kick stands for: a kick that
	// lands after this reset interrupts the read below.
	c.epFile.SetReadDeadline(time.Time{})
	if c.down.Load() {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	var stop func() bool
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, c.kickLeader)
	}
	c.nSleeps.Add(1)
	rerr := c.epRaw.Read(c.epollFn)
	if stop != nil {
		stop()
	}
	if rerr != nil && !errors.Is(rerr, os.ErrDeadlineExceeded) && !c.down.Load() {
		c.fail(&sessionError{sentinel: ErrEngineUnavailable, detail: "wait on CQ doorbell", cause: rerr})
	}
	return nil
}

// epollReady is the RawConn.Read callback: true once the CQ doorbell fired (its counter
// is then read back to zero); false makes the netpoller wait for the epoll fd.
func (c *Client) epollReady(fd uintptr) bool {
	n, err := unix.EpollWait(int(fd), c.epEvents[:], 0)
	if err != nil || n <= 0 {
		return false
	}
	// Readable, and only this client holds the read end: the read returns at once. Bytes
	// beyond the buffer make the next sleep return at once (a spurious wake-up, rechecked).
	unix.Read(c.sessFD, c.efdBuf[:])
	return true
}

// kickLeader interrupts a leader sleeping on the CQ doorbell.
func (c *Client) kickLeader() { c.epFile.SetReadDeadline(time.Unix(1, 0)) }

// kickReaper asks the background reaper to reap outstanding completions.
func (c *Client) kickReaper() {
	select {
	case c.reapTok <- struct{}{}:
	default:
	}
}

// handOff runs after a leader released cqMu, with settled as it left it: if completions
// are still owed, someone must keep reaping. (The leader's Unlock precedes this load of
// nSubmitted, and a submitter's store of nSubmitted precedes its TryLock, so either the
// submitter leads or we see its request.)
func (c *Client) handOff(settled uint64) {
	if int64(c.nSubmitted.Load()-settled) > 0 {
		c.kickReaper()
	}
}

// reaper leads whenever asked and nobody else does: it reaps completions of requests whose
// waiters gave up or are parked, so every completion is reaped without a dedicated thread
// spinning while the client is idle.
func (c *Client) reaper() {
	defer close(c.reaperDone)
	ctx := context.Background()
	for {
		select {
		case <-c.reapTok:
		case <-c.downCh:
			return
		}
		for !c.down.Load() && c.cqMu.TryLock() {
			if c.owedLocked() {
				c.lead(ctx, waitTarget{})
			}
			settled := c.settled
			c.cqMu.Unlock()
			if int64(c.nSubmitted.Load()-settled) <= 0 {
				break // handOff's argument: a request published since is led by its waiter
			}
		}
	}
}
