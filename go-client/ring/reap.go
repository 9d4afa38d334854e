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

// Wait blocks until the request completes and returns its result (see Do for the errors).
// On ctx cancellation it returns ctx.Err() promptly; the late completion is reaped and
// discarded, and a buffer the request used is released only then.
func (t Ticket) Wait(ctx context.Context) (int32, error) {
	c := t.c
	if c == nil || int(t.idx) >= len(c.slots) {
		return 0, errors.New("swring: invalid ticket")
	}
	s := &c.slots[t.idx]
	if s.gen.Load() != t.gen {
		return 0, errors.New("swring: ticket already waited for")
	}
	c.life.RLock()
	defer c.life.RUnlock()
	for {
		switch s.state.Load() {
		case slotDone:
			return c.collect(t.idx)
		case slotCompleting:
			runtime.Gosched()
		case slotPending:
			if !c.down.Load() && c.cqMu.TryLock() {
				err := c.lead(ctx, s)
				c.cqMu.Unlock()
				c.handOff()
				if err != nil && s.state.Load() != slotDone {
					if s.state.CompareAndSwap(slotPending, slotAbandoned) {
						c.kickReaper()
						return 0, err
					}
				}
				continue
			}
			if !s.state.CompareAndSwap(slotPending, slotParked) {
				continue
			}
			select {
			case <-s.done:
				return c.collect(t.idx)
			case <-ctx.Done():
				if s.state.CompareAndSwap(slotParked, slotAbandoned) {
					c.kickReaper()
					return 0, ctx.Err()
				}
				<-s.done // completing: the signal is on its way
				return c.collect(t.idx)
			}
		default:
			return 0, errors.New("swring: ticket already waited for")
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

// collect returns a done slot's outcome and frees it.
func (c *Client) collect(idx uint32) (int32, error) {
	s := &c.slots[idx]
	res, err := s.result, s.err
	s.err = nil
	s.state.Store(slotFree)
	c.freeSlots <- idx
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
func (c *Client) completeSlot(idx, gen uint32, res int32, flags uint32, err error) {
	if int(idx) >= len(c.slots) {
		c.nStray.Add(1)
		return
	}
	s := &c.slots[idx]
	if s.gen.Load() != gen {
		c.nStray.Add(1)
		return
	}
	var prev uint32
	for {
		prev = s.state.Load()
		if prev != slotPending && prev != slotParked && prev != slotAbandoned {
			if prev != slotCompleting {
				c.nStray.Add(1)
				return
			}
			runtime.Gosched()
			continue
		}
		if s.state.CompareAndSwap(prev, slotCompleting) {
			break
		}
	}
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
	if prev == slotAbandoned {
		s.state.Store(slotFree)
		c.freeSlots <- idx
		return
	}
	s.result, s.flags, s.err = res, flags, err
	s.state.Store(slotDone)
	if prev == slotParked {
		s.done <- struct{}{}
	}
}

// reapLocked dispatches every ready completion. Caller holds cqMu and c.life (read).
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
	// unreaped still counts the n just reaped: it is the in-flight count before this reap.
	if c.unreaped.Load() > int64(c.layout.CQEntries) && atomic.LoadUint32(c.sq.Ctl.Flags)&wire.NeedWakeup != 0 {
		c.wakeWorker()
	}
	c.unreaped.Add(-int64(n))
	c.nCompleted.Add(uint64(n))
	return nil
}

func (c *Client) targetDone(target *slot) bool {
	if target == nil {
		return c.unreaped.Load() <= 0
	}
	st := target.state.Load()
	return st == slotDone || st == slotCompleting
}

// lead reaps the CQ until target completed (or, with no target, until nothing is
// outstanding): spin for cfg.spin, then sleep on the CQ doorbell. Caller holds cqMu.
func (c *Client) lead(ctx context.Context, target *slot) error {
	start := time.Now()
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

// handOff runs after a leader released cqMu: if completions are still owed, someone must
// keep reaping. (The leader's Unlock precedes this load, and a submitter's increment of
// unreaped precedes its TryLock, so either the submitter leads or we see its request.)
func (c *Client) handOff() {
	if c.unreaped.Load() > 0 {
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
		c.life.RLock()
		for c.unreaped.Load() > 0 && !c.down.Load() && c.cqMu.TryLock() {
			c.lead(ctx, nil)
			c.cqMu.Unlock()
		}
		c.life.RUnlock()
	}
}
