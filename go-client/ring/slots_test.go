package ring

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Slot backpressure: with 4 slots and 16 goroutines, most submitters wait for a free slot
// (waitSlot) at any time, and slots come back both from Wait (collect) and from the leader
// (abandoned requests, freed when their completions are reaped). A lost wake-up leaves a
// submitter asleep with slots free: its Submit then fails with DeadlineExceeded here.
func TestSlotWaitersAreWoken(t *testing.T) {
	_, path := startFake(t, func(e *fakeEngine) { e.OpDelay = 20 * time.Microsecond })
	c := dialT(t, path, WithMaxInFlight(4), WithSpin(5*time.Microsecond))
	ctx := testCtx(t)
	var wg sync.WaitGroup
	var ok, abandoned atomic.Int64
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				// Every slot wait must end well within this; the fake engine answers in µs.
				sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				tk, err := c.Submit(sctx, &Request{Opcode: OpNop})
				if err != nil {
					cancel()
					t.Errorf("goroutine %d submit %d: %v", g, i, err)
					return
				}
				wctx := sctx
				if g%4 == 0 && i%3 == 0 {
					// Give up at once now and then: the leader frees these slots.
					var wcancel context.CancelFunc
					wctx, wcancel = context.WithCancel(sctx)
					wcancel()
				}
				_, err = tk.Wait(wctx)
				cancel()
				switch {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, context.Canceled):
					abandoned.Add(1)
				default:
					t.Errorf("goroutine %d wait %d: %v", g, i, err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for freeSlots(t, c) != c.MaxInFlight() {
		if time.Now().After(deadline) {
			t.Fatalf("%d/%d slots free, stats %+v", freeSlots(t, c), c.MaxInFlight(), c.Stats())
		}
		time.Sleep(time.Millisecond)
	}
	t.Logf("%d completed, %d abandoned", ok.Load(), abandoned.Load())
}

// A submitter waiting for a slot is woken by the one event that frees it: a Wait that
// collects (collect), a completion of an abandoned request (the leader), or, with two
// waiters and two slots freed at once, the waiter ahead of it passing the wake-up on.
func TestSlotWaiterWoken(t *testing.T) {
	for _, how := range []string{"collect", "abandoned", "two waiters"} {
		t.Run(how, func(t *testing.T) {
			_, path := startFake(t, nil)
			slots := 1
			if how == "two waiters" {
				slots = 2
			}
			c := dialT(t, path, WithMaxInFlight(slots))
			ctx := testCtx(t)
			held := make([]Ticket, slots)
			for i := range held {
				var err error
				if held[i], err = c.Submit(ctx, &Request{Opcode: OpNop}); err != nil {
					t.Fatal(err)
				}
			}
			arrived, release := make(chan struct{}), make(chan struct{})
			if how == "two waiters" {
				// (Set before the submitters start, reset after they are done.)
				testHookSlotWait = func() { arrived <- struct{}{}; <-release }
				defer func() { testHookSlotWait = nil }()
			}
			errs := make(chan error, slots)
			// Every submitter keeps its slot until all have submitted: a slot that comes
			// back through a waiter's own Wait would hide a lost wake-up.
			var submitted sync.WaitGroup
			submitted.Add(slots)
			for range slots {
				go func() {
					sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
					defer cancel()
					tk, err := c.Submit(sctx, &Request{Opcode: OpNop})
					submitted.Done()
					submitted.Wait()
					if err == nil {
						_, err = tk.Wait(sctx)
					}
					errs <- err
				}()
			}
			if how == "two waiters" {
				// Both slots are freed while both waiters are between finding none and
				// waiting: the first free leaves one wake-up token, the second finds it
				// there, and only the waiter that takes it can pass the wake-up on.
				defer close(release) // on failure
				<-arrived
				<-arrived
				for _, tk := range held {
					if _, err := tk.Wait(ctx); err != nil {
						t.Fatal(err)
					}
				}
				held = nil
				release <- struct{}{}
				release <- struct{}{}
			}
			// Let them find no slot and go to sleep.
			for held != nil && c.slotWaiters.Load() != int32(slots) {
				time.Sleep(time.Millisecond)
			}
			time.Sleep(20 * time.Millisecond)
			for _, tk := range held {
				wctx := ctx
				if how == "abandoned" {
					var cancel context.CancelFunc
					wctx, cancel = context.WithCancel(ctx)
					cancel()
				}
				if _, err := tk.Wait(wctx); err != nil && !errors.Is(err, context.Canceled) {
					t.Fatal(err)
				}
			}
			for range slots {
				if err := <-errs; err != nil {
					t.Fatalf("waiting submitter: %v", err)
				}
			}
		})
	}
}

// A request published just as the session went down, after failAll passed its slot: its
// Wait fails it instead of parking for good, and does not reap the CQ of a region that
// Close has unmapped (that would fault).
func TestWaitPendingAfterClose(t *testing.T) {
	_, path := startFake(t, nil)
	c := dialT(t, path)
	if err := c.Nop(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	// What the late submitter leaves behind: a request in the submission log that nobody
	// will complete (published into a ring of its own: the session's is unmapped).
	c.sq = newHeapRings(t, 4, 8).SQProd
	tk := logBatch(t, c, []Request{{Opcode: OpNop}})[0]
	ctx, cancel := context.WithTimeout(testCtx(t), 5*time.Second)
	defer cancel()
	if _, err := tk.Wait(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("wait: %v, want ErrClosed", err)
	}
}
