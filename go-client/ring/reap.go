package ring

import (
	"context"
	"errors"
	"fmt"
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
	if c == nil || int(t.idx) >= len(c.slots) {
		return 0, errors.New("swring: invalid ticket")
	}
	s := &c.slots[t.idx]
	for {
		// Pairs with prepare's store and completeSlot's CAS: a done slot's outcome is
		// visible once this load sees it done.
		w := s.word.Load()
		if slotGen(w) != t.gen {
			return 0, errWaited
		}
		switch slotState(w) {
		case slotDone:
			return c.collect(t.idx, w)
		case slotPending:
			if c.down.Load() {
				// Published by a submitter that saw the session up just before it went
				// down, after failAll had passed this slot: fail it now, or nobody will.
				c.failAll()
				continue
			}
			if c.cqMu.TryLock() {
				err := c.lead(ctx, s)
				settled := c.settled
				c.cqMu.Unlock()
				c.handOff(settled)
				// A CAS from pending: if the completion came meanwhile, collect it instead.
				if err != nil && s.word.CompareAndSwap(w, slotWord(t.gen, slotAbandoned)) {
					c.kickReaper()
					return 0, err
				}
				continue
			}
			// Pairs with completeSlot's CAS: it sees parked (and signals done), or we see
			// its done and collect.
			if !s.word.CompareAndSwap(w, slotWord(t.gen, slotParked)) {
				continue
			}
			select {
			case <-s.done:
				return c.collect(t.idx, slotWord(t.gen, slotDone))
			case <-ctx.Done():
				// Races completeSlot's CAS from parked: whoever wins decides whether the
				// completer frees the slot or signals done.
				if s.word.CompareAndSwap(slotWord(t.gen, slotParked), slotWord(t.gen, slotAbandoned)) {
					c.kickReaper()
					return 0, ctx.Err()
				}
				<-s.done // completed meanwhile: the signal is on its way
				return c.collect(t.idx, slotWord(t.gen, slotDone))
			}
		default:
			return 0, errWaited
		}
	}
}

// WaitAll waits for every ticket and returns the first error (all tickets are waited for
// even after an error, unless ctx ends).
func WaitAll(ctx context.Context, tickets []Ticket) error {
	var first error
	for _, t := range tickets {
		if _, err := t.Wait(ctx); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// collect returns the outcome of a slot whose word the caller saw at w (done) and frees it.
func (c *Client) collect(idx uint32, w uint64) (int32, error) {
	s := &c.slots[idx]
	res, err := s.result, s.err
	// A CAS rather than a store: of two Waits of one ticket racing here, one collects.
	// Pairs with prepare's load of word when the slot is reused.
	if !s.word.CompareAndSwap(w, slotWord(slotGen(w), slotFree)) {
		return 0, errWaited
	}
	s.err = nil
	c.freeSlot(idx)
	if err != nil {
		return 0, err
	}
	if res < 0 {
		return res, ResultError(res)
	}
	return res, nil
}

// completeSlot stores an outcome for the request (idx, gen) and hands it to its waiter, or
// frees the slot if the waiter gave up. A completion for no live request counts as stray.
// Caller holds cqMu (or owns the client alone, in tests): completers never race each other.
func (c *Client) completeSlot(idx, gen uint32, res int32, flags uint32, err error) {
	if int(idx) >= len(c.slots) {
		c.nStray.Add(1)
		return
	}
	s := &c.slots[idx]
	// Pairs with prepare's store: the slot's buffers are visible once we see it pending.
	w := s.word.Load()
	if slotGen(w) != gen {
		c.nStray.Add(1)
		return
	}
	if st := slotState(w); st != slotPending && st != slotParked && st != slotAbandoned {
		c.nStray.Add(1)
		return
	}
	// From here the slot is ours to complete: its waiter may still move it from pending to
	// parked or abandoned, or from parked to abandoned, but nobody else changes it until
	// our CAS below, and the waiter reads the fields only once it sees done.
	buf, resp := s.buf, s.resp
	s.buf, s.resp = Buffer{}, Buffer{}
	// The engine is done with the buffers: they may be reused once their owners released
	// them.
	if buf.Valid() {
		buf.unpin()
	}
	if resp.Valid() {
		resp.unpin()
	}
	s.result, s.flags, s.err = res, flags, err
	for {
		if slotState(w) == slotAbandoned {
			if s.word.CompareAndSwap(w, slotWord(gen, slotFree)) {
				s.err = nil
				c.freeSlot(idx)
				return
			}
		} else if s.word.CompareAndSwap(w, slotWord(gen, slotDone)) {
			// Publishes the outcome: pairs with Wait's load of word.
			if slotState(w) == slotParked {
				s.done <- struct{}{}
			}
			return
		}
		w = s.word.Load()
	}
}

// reapLocked dispatches every ready completion. Caller holds cqMu and unmapped is false.
func (c *Client) reapLocked() error {
	n := c.cq.Refresh()
	if n == 0 {
		return nil
	}
	for i := uint32(0); i < n; i++ {
		e := c.cq.PopCQE()
		c.completeSlot(uint32(e.UserData), uint32(e.UserData>>32), e.Result, uint32(e.Flags), nil)
	}
	// Hand the slots back before the waiters run, so the engine can admit more.
	c.cq.Release()
	// SPEC.md §6 "The engine also sleeps on a full CQ": with more requests in flight than
	// the CQ holds, the worker may sleep on SQ entries it could not admit; our new CQ head
	// gives it room, so look at its NEED_WAKEUP. The SC store (head, in release) → load
	// (flags) order of Go atomics is the full fence that pairs with the worker's
	// announce_sleep (flags store; fence(SeqCst); check "SQ ready and CQ room").
	// settled does not count the n just reaped yet: this is the in-flight count before
	// this reap. (nSubmitted pairs with push's store, made before the publish whose
	// entries we reaped.)
	if int64(c.nSubmitted.Load()-c.settled) > int64(c.layout.CQEntries) && atomic.LoadUint32(c.sq.Ctl.Flags)&wire.NeedWakeup != 0 {
		c.wakeWorker()
	}
	c.settled += uint64(n)
	c.nCompleted.Add(uint64(n)) // a statistic (Stats); nothing is ordered by it
	return nil
}

// owedLocked reports whether a published request's completion is still to be reaped.
// Caller holds cqMu. (Stray CQEs can make settled run ahead of nSubmitted: signed.)
func (c *Client) owedLocked() bool { return int64(c.nSubmitted.Load()-c.settled) > 0 }

func (c *Client) targetDone(target *slot) bool {
	if target == nil {
		return !c.owedLocked()
	}
	return slotState(target.word.Load()) == slotDone
}

// lead reaps the CQ until target completed (or, with no target, until nothing is
// outstanding): spin for cfg.spin, then sleep on the CQ doorbell. Caller holds cqMu.
func (c *Client) lead(ctx context.Context, target *slot) error {
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
				c.lead(ctx, nil)
			}
			settled := c.settled
			c.cqMu.Unlock()
			if int64(c.nSubmitted.Load()-settled) <= 0 {
				break // handOff's argument: a request published since is led by its waiter
			}
		}
	}
}
